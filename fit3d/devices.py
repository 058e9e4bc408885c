"""Which torch devices this installation can use (a one-line answer instead of torch's assertion)."""

from __future__ import annotations


def check_device(device) -> None:
    """Whether this torch can use ``device`` (a string or :class:`torch.device`; None: torch's default).

    Raises:
        ValueError: ``cuda`` asked for on a torch without usable CUDA (how to install a CUDA
            build), or a string torch does not read as a device.
    """
    import torch

    if device is None:  # torch's default device
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{device!r} is not a torch device: {e}") from e
    if kind == "cuda" and not torch.cuda.is_available():
        build = torch.__version__
        raise ValueError(f"{device} asked for, but this torch ({build}) has no usable CUDA: install a CUDA build with "
                         f"'pip install --force-reinstall torch=={build.split('+')[0]} --index-url "
                         "https://download.pytorch.org/whl/cu128' (then pip install -e . again)")
