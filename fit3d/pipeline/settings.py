"""What an output folder was fitted with (``fit_settings.json``), so that a rerun with other
settings (another fitter, ``--no-flip``, another prior or regressor, another focal length...)
does not resume into it and leave a folder of mixed fits (``fit3d eft``, ``fit3d smplify`` and
every :func:`fit3d.pipeline.run` from Python; NeuralAnnot keeps its own record,
``annotator_state.json``, and runs without this one).

* The folder's settings are recorded before anything is fitted; a run whose settings differ
  stops with one line naming the differences. A folder that holds no fit yet is refused too
  (another run may be fitting into it with its settings, none written yet), unless
  ``overwrite`` takes it over (any job: nothing is mixed). Checking and recording happen under
  a file lock (``fit_settings.json.lock``), so two runs started together with different
  settings cannot both pass.
* ``overwrite`` with other settings is allowed only for a job that refits the whole folder
  (no ``limit``, one shard): otherwise the folder would end up mixed. Until that job finishes,
  the record says an overwrite is under way (``"overwriting": true``), so an interrupted
  overwrite is not resumed by a run without ``overwrite``.
* Settings are compared on the keys both records have, so an option added to fit3d later does
  not lock older folders out; an option whose value in every older folder is known
  (:data:`ADDED_LATER`, e.g. ``follow``: no older folder was fitted with it) compares as that
  value, and a resume that matches writes the record again with the new keys. Folders fitted before this file existed are not given one (what
  most of their settings were is unknown); their ``fitter`` and ``model`` are read from one of
  their fits and compared, the rest resumes as before. A record that exists but cannot be read
  (damaged) is not taken for none: only a whole-folder ``overwrite`` may fit into that folder.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from fit3d.data.writers import has_fit_files, iter_fit_files, read_fit, write_json

SETTINGS_FILE = "fit_settings.json"
_OVERWRITING = "overwriting"
#: Settings recorded since a later version of fit3d, with the value every folder recorded
#: before them was fitted with: a record without one compares as that value.
ADDED_LATER = {"follow": False}
#: Seconds a run waits for another one checking the same folder's settings (a check takes
#: milliseconds; longer means a lock file left by a crash on a file system without lock release).
SETTINGS_LOCK_TIMEOUT_S = 120


def normalised(settings: dict) -> dict:
    """``settings`` as JSON reads it back (paths as strings, tuples as lists), so a recorded
    and a new dict compare equal when they say the same."""
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def recorded_settings(out_dir: str | Path) -> dict | None:
    """What ``out_dir/fit_settings.json`` records (None when there is none or it is unreadable),
    e.g. for ``fit3d render`` to rebuild the body model the fits were made with."""
    try:
        data = json.loads((Path(out_dir) / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fitting_settings(out_dir: str | Path) -> dict | None:
    """The settings a folder's fits were made with: :func:`recorded_settings`, else (a folder that
    records none, e.g. ``fit3d neuralannot``'s, whose annotator keeps its own record) the
    ``settings`` of one of its summaries (``summary.json``, ``summary.shard-i-of-n.json``), with
    its ``model_file`` as ``model_path``; None when there are none. For what reads the fits back
    with their body model (``fit3d render``, the exports' gender)."""
    record = recorded_settings(out_dir)
    if record is not None:
        return record
    for path in sorted(Path(out_dir).glob("summary*.json")):
        try:
            settings = json.loads(path.read_text()).get("settings")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(settings, dict) and settings.get("model"):
            return dict(settings, model_path=settings.get("model_path") or settings.get("model_file"))
    return None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diff(key: str, old, new) -> list[tuple[str, object, object]]:
    """The differences of two recorded values as ``(key, old, new)``, down to the entries of dicts
    (those both have: an entry added to fit3d later does not lock older folders out) and of lists
    of one length (``("fitter.schedule[1].iterations", 15, 16)``)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):  # on the entries both have, as at the top level
        return [d for k in sorted(set(old) & set(new)) for d in _diff(f"{key}.{k}", old[k], new[k])]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _diff(f"{key}[{i}]", a, b)]
    return [(key, old, new)]


def _differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    old = dict({k: v for k, v in ADDED_LATER.items() if k in new}, **old)
    # the model file both record is what counts, not how it was given (its folder or itself); the state
    # of the model's set-up is a record for the exports, not a setting (weights it made differ by their
    # fingerprints; a fitter given its own weights does not use it)
    ignore = {_OVERWRITING, "model_setup"} | ({"model_path"} if "model_file" in old and "model_file" in new
                                              else set())
    return [d for k in sorted(set(old) & set(new) - ignore) for d in _diff(k, old[k], new[k])]


def differing_settings(settings: list[dict]) -> list[str]:
    """The keys (``fitter.prototype_starts``, ``prior``) in which recorded ``settings`` differ from
    the first of them, as a run's check compares them (:func:`same_settings`); sorted, each once."""
    return sorted({key for other in settings[1:] for pair in ((settings[0], other), (other, settings[0]))
                   for key, _, _ in _differences(*pair)})


def same_settings(a: dict, b: dict) -> bool:
    """Whether two recorded settings say the same, as a run's check compares them (a setting one of
    them predates, :data:`ADDED_LATER`, at its default; the model file, not how it was given)."""
    return not _differences(a, b) and not _differences(b, a)


def check_settings(out_dir: str | Path, settings: dict, overwrite: bool = False, whole_folder: bool = True,
                   record: bool = True) -> bool:
    """Check ``settings`` (JSON-able values) against ``out_dir/fit_settings.json`` and record them
    (module docstring). ``whole_folder``: this job fits every image of the folder (no limit,
    one shard). ``record`` False: check only (``--dry-run``).

    Returns:
        True when this run overwrites fits made with other settings: call
        :func:`finish_overwrite` once it has finished uninterrupted.
    Raises:
        ValueError: the folder holds fits made with other settings (or an interrupted overwrite
            with other settings) and this run may not replace them; the message names each
            difference and what to do. Also when the file cannot be written.
    """
    from filelock import FileLock, Timeout

    out_dir = Path(out_dir)
    if not record:  # a check alone (--dry-run) writes nothing, not even the lock
        return _check(out_dir, normalised(settings), overwrite, whole_folder, record)
    lock = out_dir / (SETTINGS_FILE + ".lock")
    try:
        with FileLock(str(lock), timeout=SETTINGS_LOCK_TIMEOUT_S):
            return _check(out_dir, normalised(settings), overwrite, whole_folder, record)
    except Timeout as e:
        raise ValueError(f"another run has held {lock} for {SETTINGS_LOCK_TIMEOUT_S} s; if none is running, "
                         "delete it and run again") from e
    except OSError as e:  # the lock cannot be made: a read-only folder
        raise ValueError(f"cannot write {lock}: {e}") from e


def _check(out_dir: Path, new: dict, overwrite: bool, whole_folder: bool, record: bool) -> bool:
    path = out_dir / SETTINGS_FILE
    old = recorded_settings(out_dir)
    if old is None and path.exists() and has_fit_files(out_dir):  # a damaged record (a review: it was read
        if not path.is_file():  # (a folder in its place: --overwrite could not write the record either)
            raise ValueError(f"{path} is not a file: remove it (fit3d records the folder's settings there) and run "
                             "again")
        if not (overwrite and whole_folder):  # as none, and a run of other settings mixed into the folder)
            raise ValueError(f"{path} cannot be read as a settings record, so what this folder's fits were made "
                             "with is unknown: pass --overwrite (RunConfig(overwrite=True) in Python) in one job "
                             "(no --limit, one shard) to refit every image, restore the file, or choose another --out")
        if record:
            _write(path, dict(new, **{_OVERWRITING: True}))
        return True
    if old is None:  # none yet: nothing to compare with
        if not has_fit_files(out_dir):  # a new folder
            if record:
                _write(path, new)
            return False
        old = _settings_of_a_fit(out_dir)  # an older folder: only what its fits say
    diff = [f"{key}: {_short(was)} there, {_short(now)} now" for key, was, now in _differences(old, new)]
    interrupted = bool(old.get(_OVERWRITING))
    if not diff and not interrupted:
        if record and path.is_file() and set(new) - set(old):  # the record learns the keys added since
            _write(path, new)
        return False
    if not has_fit_files(out_dir):  # started with other settings, no fit yet: maybe fitting now
        if not overwrite:
            raise ValueError(f"{out_dir} was started with other settings ({'; '.join(diff) or 'an --overwrite'}) and "
                             "holds no fit yet (a run may be fitting into it now): pass --overwrite "
                             "(RunConfig(overwrite=True) in Python) to take it over, or choose another --out")
        if record:
            _write(path, new)
        return False
    what = f"other settings ({'; '.join(diff)})" if diff else "these settings, by an --overwrite run that did not finish"
    if not overwrite:
        how = ("pass --overwrite (RunConfig(overwrite=True) in Python) to refit every image" if whole_folder else
               "refit it whole with --overwrite in one job (no --limit, one shard: not a sharded or submitted run)")
        raise ValueError(f"{out_dir} holds fits made with {what}: {how}, or choose another --out")
    if not whole_folder:
        raise ValueError(f"{out_dir} holds fits made with {what}: --overwrite with --limit or --shard would leave "
                         "it mixed; refit it whole (no --limit, one shard) or choose another --out")
    if record:
        _write(path, dict(new, **{_OVERWRITING: True}))
    return True


def _settings_of_a_fit(out_dir: Path, tries: int = 20) -> dict:
    """``fitter`` and ``model`` as a per-image output of ``out_dir`` records them (a folder
    without ``fit_settings.json``): the first of ``tries`` files that reads and holds them as
    single strings (a merged dataset file holds them per person); empty when none does."""
    for f in itertools.islice(iter_fit_files(out_dir), tries):
        try:
            d = read_fit(f)
        except (OSError, ValueError):
            continue
        found = {k: str(d[k]) for k in ("fitter", "model") if k in d and np.ndim(d[k]) == 0}
        if found:
            return found
    return {}


def finish_overwrite(out_dir: str | Path, settings: dict) -> None:
    """Record ``settings`` as the folder's, after an overwrite (:func:`check_settings`) finished."""
    _write(Path(out_dir) / SETTINGS_FILE, normalised(settings))


def _write(path: Path, data: dict) -> None:
    try:
        write_json(path, data)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e}") from e
