"""What decides a fitter's output, as JSON-able data.

A run folder records the settings its fits were made with, so that a rerun with other
settings does not resume into it (:mod:`fit3d.pipeline.settings`). The command line records
its options; a fitter built in Python describes itself with ``fitter.settings()``, made from
these pieces: learned weights (a prior, a regressor, a prototype memory) appear as a
fingerprint of their values, so another weights file is another setting.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _feed(h, value) -> None:
    """Hash a nested structure of tensors, arrays, numbers, strings, lists and dicts (dicts by
    sorted key, lists with their length), arrays and tensors by dtype, shape and bytes."""
    if isinstance(value, dict):
        h.update(f"{{{len(value)}".encode())
        for k in sorted(value, key=str):
            h.update(f"<{k}>".encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _feed(h, v)
    elif isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        _feed(h, (t.float() if t.dtype == torch.bfloat16 else t).numpy())
    elif isinstance(value, (np.ndarray, np.generic)):
        a = np.ascontiguousarray(value)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    else:
        h.update(f"{type(value).__name__}:{value!r}".encode())


def fingerprint(module: torch.nn.Module | None) -> str | None:
    """A short hash (12 hex digits) of a module's learned values; None for None.

    Hashes what its weights file holds, ``module.state()`` (fit3d's priors, prototype memories
    and regressors; a wrapper with an ``inner`` module, such as the flip average, by its inner
    module's), else its ``state_dict``: values computed from them at load (a GMM's precisions)
    may differ in the last bit between machines and devices, the file's do not, so the same
    weights give the same fingerprint on every machine of a sharded run.

    Raises:
        TypeError: a tensor of a dtype NumPy cannot hold (other than bfloat16, hashed as float32).
    """
    if module is None:
        return None
    if not hasattr(module, "state") and isinstance(getattr(module, "inner", None), torch.nn.Module):
        return fingerprint(module.inner)
    h = hashlib.sha1()
    _feed(h, module.state() if hasattr(module, "state") else module.state_dict())
    return h.hexdigest()[:12]


def describe_module(module: torch.nn.Module | None) -> dict | None:
    """``{"kind": its name (or class name), "weights": fingerprint}``, with a prior's
    ``weight_scale``; None for None."""
    if module is None:
        return None
    out = dict(kind=str(getattr(module, "name", type(module).__name__)), weights=fingerprint(module))
    if hasattr(module, "weight_scale"):
        out["weight_scale"] = float(module.weight_scale)
    return out


def fitter_settings(fitter) -> dict | None:
    """``fitter.settings()`` (SMPLify, EFT, the fallback: what decides its fits), or None for a
    fitter without one (a plain function)."""
    return fitter.settings() if hasattr(fitter, "settings") else None
