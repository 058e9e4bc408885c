"""What made a trained file: the command, its settings, the pose set's digest, the software and the
thread count (training on the CPU is deterministic for a given thread count, not across counts).
Saved in the file under ``"training"`` (``torch.load(path)["training"]``); no clock time, so that
retraining with the same settings writes the same bytes."""

from __future__ import annotations

from pathlib import Path


def training_record(command: str, pose_set_path: str | Path, **settings) -> dict:
    """``{command, pose_set (file name), pose_set_sha256 (16 hex digits), fit3d, torch, torch_threads,
    **settings}`` for a file trained now from the pose set at ``pose_set_path``.

    Raises:
        FileNotFoundError: no such pose set.
    """
    import torch

    from fit3d.body_models.weights import file_digest
    from fit3d import __version__

    return dict(command=command, pose_set=Path(pose_set_path).name, pose_set_sha256=file_digest(pose_set_path),
                fit3d=__version__, torch=str(torch.__version__), torch_threads=torch.get_num_threads(), **settings)
