"""Which torch devices this installation can use (a one-line answer instead of torch's assertion)."""

from __future__ import annotations


def check_device(device) -> None:
    """Whether this torch can use ``device`` (a string or :class:`torch.device`; None: torch's default).

    Raises:
        ValueError: ``cuda`` asked for on a torch without usable CUDA (how to install a CUDA
            build), a CUDA device index this machine does not have, ``meta`` (a device without
            data: nothing can be fitted on it), another kind this torch cannot allocate on (``mps``
            on Linux, ``xpu`` without its build), or a string torch does not read as a device.
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
    if kind == "cuda":
        index, count = torch.device(device).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise ValueError(f"{device} asked for, but this machine has {count} CUDA device{'s' if count != 1 else ''} "
                             f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
        return
    if kind == "meta":
        raise ValueError("meta is a device without data (for shapes only): fit on cpu or cuda")
    if kind != "cpu":
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError, TypeError) as e:
            why = (str(e).splitlines() or [type(e).__name__])[0]
            why = why if len(why) <= 100 else why[:97] + "..."
            raise ValueError(f"this torch ({torch.__version__}) cannot use the device {device!r} ({why}): "
                             "use cpu or cuda") from e
