"""What an output folder was fitted with (``fit_settings.json``), so that a rerun with other
settings (another fitter, ``--no-flip``, another prior or regressor, another focal length...)
does not resume into it and leave a folder of mixed fits.

The folder's settings are written before anything is fitted; a run whose settings differ stops
with one line naming the differences, unless it refits everything (``overwrite``) or the folder
holds no fit yet. Folders written before this file existed resume as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from fit3d.data.writers import write_json

SETTINGS_FILE = "fit_settings.json"


def normalised(settings: dict) -> dict:
    """``settings`` as JSON reads it back (paths as strings, tuples as lists), so a recorded
    and a new dict compare equal when they say the same."""
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def check_settings(out_dir: str | Path, settings: dict, overwrite: bool = False) -> None:
    """Record ``settings`` (JSON-able values) in ``out_dir/fit_settings.json``, after checking
    that the fits already there were made with the same ones.

    Raises:
        ValueError: ``out_dir`` holds ``.npz`` fits and a ``fit_settings.json`` with other
            settings, and ``overwrite`` is False (the message names each difference), or the
            file cannot be written.
    """
    out_dir = Path(out_dir)
    path = out_dir / SETTINGS_FILE
    new = normalised(settings)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: nothing to compare with
        old = None
    if old == new:
        return
    if old is not None and not overwrite and next(out_dir.glob("*.npz"), None) is not None:
        diff = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
                         if old.get(k) != new.get(k))
        raise ValueError(f"{out_dir} holds fits made with other settings ({diff}): pass --overwrite to refit "
                         "every image, or choose another --out")
    try:
        write_json(path, new)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e}") from e
