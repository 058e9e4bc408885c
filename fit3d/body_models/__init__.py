"""Body models behind one interface (:class:`BodyModel`): anny (default) and SMPL/SMPL-H/SMPL-X."""

from __future__ import annotations

from fit3d.body_models.base import BodyModel, BodyOutput
from fit3d.devices import check_device
from fit3d.names import GENDERS, MODELS, SMPL_FAMILY


def build_body_model(
    name: str = "anny",
    model_path: str | None = None,
    gender: str = "neutral",
    num_betas: int = 10,
    device: str = "cpu",
) -> BodyModel:
    """A body model by name.

    Args:
        name: ``anny`` (bundled, default), ``smpl``, ``smplh`` or ``smplx``.
        model_path: licensed model file or folder (SMPL family only).
        gender: SMPL family only.
        num_betas: SMPL family only; anny has 6 phenotype parameters.
        device: ``"cpu"``, ``"cuda"``...
    Raises:
        ValueError: unknown name or gender, or a device this torch cannot use (``"cuda"`` on a
            CPU-only build: the message says how to install a CUDA build). FileNotFoundError:
            missing SMPL model file.
    """
    check_device(device)
    if name in SMPL_FAMILY and gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; choose from {', '.join(GENDERS)}")
    if name == "anny":
        from fit3d.body_models.anny_model import AnnyModel

        return AnnyModel(device=device)
    if name in SMPL_FAMILY:
        from fit3d.body_models.smplx_model import SMPLXModel

        return SMPLXModel(name, model_path, gender=gender, num_betas=num_betas, device=device)
    raise ValueError(f"unknown body model {name!r}; choose from {MODELS}")


__all__ = ["BodyModel", "BodyOutput", "GENDERS", "MODELS", "build_body_model", "check_device"]
