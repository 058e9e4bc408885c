"""Where fit3d keeps derived files (the compact anny model data).

``$FIT3D_CACHE_DIR`` when set, else ``~/.cache/fit3d``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The fit3d cache folder (created on first use)."""
    path = Path(os.environ.get("FIT3D_CACHE_DIR", Path.home() / ".cache" / "fit3d")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
