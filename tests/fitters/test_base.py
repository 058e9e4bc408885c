"""fit3d.fitters.base: the batch size each fitter is run with by default on each device."""

import pytest
import torch

from fit3d.fitters import EFT, SMPLify
from fit3d.fitters.base import batch_size_for


def test_each_fitter_has_a_cpu_and_a_gpu_batch_size(anny_model):
    from fit3d.fitters.build import build_eft

    assert batch_size_for(SMPLify, "cpu") == 256 and batch_size_for(EFT, "cpu") == 64
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        assert batch_size_for(SMPLify, device) == 4096 and batch_size_for(EFT, device) == 2048
    fb = build_eft(anny_model, steps=1, fallback=True)  # EFT, then SMPLify where it reprojects much closer
    assert batch_size_for(fb, "cpu") == 256  # the larger on a CPU (the operator count bounds it)
    assert batch_size_for(fb, "cuda") == 2048  # the smaller on a GPU (EFT's memory bounds it)
    from fit3d.fitters.fallback import fallback_batch_size

    assert fallback_batch_size(EFT, SMPLify, "cpu") == 256 and fallback_batch_size(EFT, SMPLify, "cuda:0") == 2048


def test_a_fitter_of_ones_own_needs_no_batch_size():
    class Plain:
        def __call__(self, batch):
            return batch

    class CpuOnly(Plain):
        default_batch_size = 32

    assert batch_size_for(Plain(), "cuda") == 64 and batch_size_for(Plain(), "cpu", fallback=7) == 7
    assert batch_size_for(CpuOnly(), "cuda") == 32  # no GPU size of its own: its CPU one
    with pytest.raises(RuntimeError):
        batch_size_for(Plain(), "gpu")  # (torch's own error for a name that is no device)


def test_the_command_line_runs_a_gpu_with_the_gpu_batch_size(tmp_path, sample_dir, anny_model, monkeypatch):
    """``fit3d smplify --device cuda`` without ``--batch-size`` runs 4,096 people per batch (checked
    on the CPU: the device check and the model are stood in for, the run is stopped once configured)."""
    import fit3d.body_models
    import fit3d.devices
    import fit3d.pipeline
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    seen = {}

    class Configured(Exception):
        pass

    def run(records, fitter, body, config, problems, pool=None):
        seen["batch_size"] = config.batch_size
        raise Configured

    monkeypatch.setattr(fit3d.devices, "check_device", lambda device: None)
    monkeypatch.setattr(fit3d.body_models, "build_body_model", lambda *a, **k: anny_model)
    monkeypatch.setattr(fit3d.pipeline, "run", run)
    args = ["--images", str(sample_dir), "--annotations", str(sample_dir / "test_coco.json"), "--no-progress"]
    for command, size in (("smplify", 4096), ("eft", 2048), ("eft --fallback", 2048)):
        seen.clear()
        r = CliRunner().invoke(cli, [*command.split(), *args, "--out", str(tmp_path / "o"), "--device", "cuda",
                                     "--overwrite"])
        assert isinstance(r.exception, Configured), r.output
        assert seen["batch_size"] == size
    r = CliRunner().invoke(cli, ["eft", *args, "--out", str(tmp_path / "o"), "--device", "cuda", "--batch-size", "9"])
    assert isinstance(r.exception, Configured) and seen["batch_size"] == 9
