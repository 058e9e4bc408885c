"""Build once, then reload instantly: the compact anny model data.

anny's first build parses its MakeHuman assets (~2 minutes on a 2-core CPU)
and writes ~800 MB of intermediate cache. fit3d builds in a temporary anny
cache, keeps only ``Anny.to_model_data()`` cast to float32 (~26 MB, one
safetensors file under :func:`fit3d.cache.cache_dir`), and deletes the rest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from fit3d.cache import cache_dir

log = logging.getLogger(__name__)

#: anny rig used by fit3d: the default anny rig without fingers, toes and eyes
#: (36 bones); fingers and toes stay rigid with their parent bones.
ANNY_RIG = "anny-nohands-notoes-noeyes"
#: Seconds a process waits for another one's first build before giving up
#: (``filelock.Timeout``); a build takes ~2 minutes on 2 cores.
BUILD_LOCK_TIMEOUT_S = 1800


def quiet_warp() -> None:
    """Silence NVIDIA warp's start-up banner where anny may import it (building the model data;
    fit3d skins with ``"lbs"``, so loading and fitting import no warp, which takes ~0.5 s)."""
    try:
        import warp

        warp.config.quiet = True
    except Exception:  # warp missing or changed: nothing to silence
        pass


def model_data_path() -> Path:
    """Path of the cached float32 model data for this anny version and rig."""
    import anny

    return cache_dir() / f"anny-{anny.__version__}-{ANNY_RIG}-float32.safetensors"


def _to_float32(data):
    changes = {}
    for f in dataclasses.fields(data):
        v = getattr(data, f.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            changes[f.name] = v.to(torch.float32).contiguous()
    return dataclasses.replace(data, **changes)


def build_model_data(path: Path) -> None:
    """Build anny's model data for :data:`ANNY_RIG` and save it (float32) at ``path``.

    The anny intermediate cache goes to a temporary folder that is deleted
    afterwards. The file is written atomically (temporary name, then rename).
    """
    quiet_warp()
    import anny
    import anny.paths

    print(
        f"fit3d: building the anny body model once (~2 min), cached at {path}",
        file=sys.stderr,
        flush=True,
    )
    tmp_cache = Path(tempfile.mkdtemp(prefix="anny-build-", dir=path.parent))
    old = anny.paths.get_anny_cache_path()
    anny.paths.set_anny_cache_path(tmp_cache)
    try:
        model = anny.Anny(rig=ANNY_RIG, pose_parameterization="local-ref", skinning_method="lbs")
        data = _to_float32(model.to_model_data())
        tmp_file = path.with_suffix(f".tmp{os.getpid()}")
        data.save_safetensors(tmp_file)
        os.replace(tmp_file, path)
    finally:
        anny.paths.set_anny_cache_path(old)
        shutil.rmtree(tmp_cache, ignore_errors=True)


def load_model_data():
    """The compact anny ``ModelData`` (float32), built on first use, once across
    concurrent processes (a file lock beside the cache file).

    Raises:
        filelock.Timeout: another process held the build lock for
            :data:`BUILD_LOCK_TIMEOUT_S` seconds.
    """
    from anny.models.model_data import ModelData  # imports no NVIDIA warp (only building the data may)

    path = model_data_path()
    if not path.is_file():
        from filelock import FileLock

        # concurrent first runs (array jobs, torchrun ranks) build once: the others
        # wait on the lock, then find the file
        with FileLock(str(path) + ".lock", timeout=BUILD_LOCK_TIMEOUT_S):
            if not path.is_file():
                build_model_data(path)
    return ModelData.load_safetensors(path)
