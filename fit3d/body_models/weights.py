"""Where a body model's learned weights live: pose priors, the prototype memory, the
EFT regressor and the retargeted pose set.

* anny: bundled with fit3d (``fit3d/priors/weights``, ``fit3d/regressors/weights``,
  ``fit3d/assets``), trained from the CMU mocap by commands in the repository.
* SMPL / SMPL-H / SMPL-X: made on the user's machine by ``fit3d setup-model`` from the
  user's licensed model file, stored in the fit3d cache under a key of the model
  type, gender and the file's SHA-256 (``<cache>/models/smpl-neutral-1a2b.../``), so a
  different file never picks up another's weights.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from fit3d.cache import cache_dir

#: What :func:`weights_path` locates.
KINDS = ("gmm", "vae", "articulation", "prototypes", "regressor", "pose_set")


def file_digest(path: str | Path, length: int = 16) -> str:
    """The first ``length`` hex digits of the file's SHA-256 (read once per file version:
    every weights lookup of a model asks for it)."""
    st = Path(path).stat()
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)[:length]


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_key(body) -> str:
    """``"anny"``, or ``"<type>-<gender>-<sha256 of the model file>"`` for the SMPL family."""
    if body.name == "anny":
        return "anny"
    return f"{body.name}-{body.gender}-{file_digest(body.model_file)}"


def setup_dir(body) -> Path:
    """The cache folder of a SMPL-family model's weights (``fit3d setup-model`` writes it)."""
    return cache_dir() / "models" / model_key(body)


def weights_path(body, kind: str) -> Path:
    """The file of ``kind`` (:data:`KINDS`) for ``body`` (it may not exist yet).

    Raises:
        KeyError: unknown kind.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown weights kind {kind!r}; known: {KINDS}")
    if body.name == "anny":
        return bundled_weights(kind, "anny")
    _warn_if_reduced(setup_dir(body), body)
    return setup_dir(body) / weights_file_name(kind)


#: The folder of the fit3d package (the bundled weights live in it).
_PACKAGE = Path(__file__).resolve().parents[1]


def bundled_weights(kind: str, model_name: str = "anny") -> Path:
    """The file of ``kind`` (:data:`KINDS`) that fit3d ships for ``model_name`` (only anny's exist):
    ``fit3d/priors/weights/<model>_<kind>.pt`` for the priors and the prototype memory,
    ``fit3d/regressors/weights/<model>_keypoint_regressor.pt``, and the pose set
    ``fit3d/assets/cmu_<model>_poses.npz`` (each reproduced by a command in the README).

    Raises:
        KeyError: unknown kind.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown weights kind {kind!r}; known: {KINDS}")
    if kind == "regressor":
        return _PACKAGE / "regressors" / "weights" / f"{model_name}_keypoint_regressor.pt"
    if kind == "pose_set":
        return _PACKAGE / "assets" / f"cmu_{model_name}_poses.npz"
    return _PACKAGE / "priors" / "weights" / f"{model_name}_{kind}.pt"


def weights_file_name(kind: str) -> str:
    """The file name of ``kind`` in a set-up folder (``gmm.pt``, ``pose_set.npz``)."""
    return f"{kind}.npz" if kind == "pose_set" else f"{kind}.pt"


#: What ``fit3d setup-model`` leaves in a model's folder while unfinished (its finished steps),
#: removed when it finishes (:mod:`fit3d.training.setup_model`).
PARTIAL = "setup.partial.json"

#: Minutes per step of ``fit3d setup-model`` measured for the SMPL-like models on a 2-core CPU
#: (three set-ups at once, 2026-11-30): what the expected-time line says. The regressor's time
#: scales with its rounds (1.2 min for 16, 14.4 for 192) and members: here the defaults' (384
#: rounds, one member; ``fit3d.training.regressor``, checked by the tests).
SETUP_MINUTES = {"retarget": 2.5, "gmm": 0.5, "vae": 5.0, "articulation": 10.5, "prototypes": 0.3, "regressor": 28.8}


def expected_setup_minutes() -> float:
    """Minutes a full set-up is expected to take on a 2-core CPU with nothing else running
    (the sum of :data:`SETUP_MINUTES`, ~48; measured beside the test suite and other runs: 72)."""
    return sum(SETUP_MINUTES.values())


def said_setup_minutes() -> int:
    """:func:`expected_setup_minutes` rounded to 5, as messages say it."""
    return 5 * round(expected_setup_minutes() / 5)


class ReducedSetupWarning(UserWarning):
    """The weights in use were made by ``fit3d setup-model --quick`` (or other reduced
    settings), or their set-up is unfinished: fine to check an installation, not to fit with.
    Its subclass :class:`OutdatedSetupWarning` says the set-up is an earlier fit3d's (a filter
    that silences this class silences both)."""


class OutdatedSetupWarning(ReducedSetupWarning):
    """The weights in use were made by a ``fit3d setup-model`` from before its retargeting took
    the spine and head relative to the rest poses (:data:`SETUP_RETARGETING`): their poses lean the
    spine and head by the difference of anny's and the model's rest poses; set up again."""


#: How ``fit3d setup-model`` retargets the bundled pose set, recorded as ``retargeting`` in
#: ``setup.json``: the spine and head relative to anny's and the model's rest poses
#: (:func:`fit3d.training.setup_model.retarget_pose_set`). A set-up without it (made before
#: 2026-12-06) matched them as they are; using its weights warns (:class:`OutdatedSetupWarning`).
SETUP_RETARGETING = "rest-relative"

#: ``(folder, state)`` that :func:`_warn_if_reduced` checked in this process.
_CHECKED: set[tuple] = set()


def forget_reduced_setup_checks() -> None:
    """Forget which set-up folders were checked in this process, so that the next use of their
    weights warns again (:class:`ReducedSetupWarning` is said once per process and folder state)."""
    _CHECKED.clear()


def _warn_if_reduced(folder: Path, body) -> None:
    """Warn when the folder's ``setup.json`` says the set-up was reduced (``"full": false``;
    files written before that flag: ``config.max_poses`` set), or when a set-up of the folder is
    unfinished (``setup.partial.json``: interrupted or still running, so some weights may still be
    the earlier set-up's), or, as :class:`OutdatedSetupWarning`, when ``setup.json`` comes from a
    set-up before :data:`SETUP_RETARGETING`. Once per process and state of the folder (a set-up that finishes or
    starts again is a new state); nothing while neither file exists. The warning names no source
    line (it is about the folder, not the caller's code)."""
    import warnings

    def mtime(name: str) -> float | None:
        try:
            return (folder / name).stat().st_mtime_ns
        except OSError:
            return None

    state = (folder, mtime(PARTIAL), mtime("setup.json"))
    if state in _CHECKED or state[1:] == (None, None):
        return
    _CHECKED.add(state)
    messages = []  # (message, category)
    if state[1] is not None:
        messages.append((f"a 'fit3d setup-model' of {folder} is unfinished ({PARTIAL}), so some of its weights may "
                         "be the earlier set-up's: if it is running now, wait for it; if it was interrupted, "
                         f"{setup_command(body)} again (it resumes) before fitting", ReducedSetupWarning))
    stats = _setup_stats(folder)
    reduced = stats is not None and not _is_full(stats)
    if reduced:
        cut = stats.get("reduced")  # (the settings that differ from a full set-up's; older files: the whole config)
        cut = ", ".join(f"{k} {v}" for k, v in cut.items()) if isinstance(cut, dict) and cut else \
            stats.get("config") or "settings not recorded"
        messages.append((f"the weights in {folder} come from a reduced 'fit3d setup-model' (e.g. --quick: {cut}): "
                         f"fits will be poor; {setup_command(body)} without --quick to replace them (about "
                         f"{said_setup_minutes()} minutes)", ReducedSetupWarning))
    elif stats is not None and stats.get("retargeting") != SETUP_RETARGETING:  # (a reduced one is said already)
        messages.append((f"the weights in {folder} come from a 'fit3d setup-model' of an earlier fit3d, whose "
                         "retargeting of the pose set bent the spine and head by the difference of anny's and "
                         f"{body.name}'s rest poses (fits inherit the lean): {setup_command(body)} again to "
                         f"replace them (about {said_setup_minutes()} minutes)", OutdatedSetupWarning))
    for m, category in messages:
        warnings.warn_explicit(m, category, "fit3d setup-model", 0)


def setup_state(body) -> dict | None:
    """What a fit's record keeps of the set-up of ``body``'s weights (``fit3d setup-model``):
    ``{"full": bool, "retargeting": str | None}`` from its folder's ``setup.json`` (``full``
    False: reduced, e.g. ``--quick``; ``retargeting`` not :data:`SETUP_RETARGETING`: an earlier
    fit3d's), with ``"unfinished": True`` while a set-up of the folder is unfinished
    (:data:`PARTIAL`); None for anny (bundled weights) or a model not set up (no readable
    ``setup.json``, or one that is no JSON object). Never compared as a setting
    (:mod:`fit3d.pipeline.settings`): the exports read it (:func:`setup_state_problem`)."""
    if body.name == "anny":
        return None
    folder = setup_dir(body)
    stats = _setup_stats(folder)
    if stats is None:
        return None
    state = dict(full=_is_full(stats), retargeting=stats.get("retargeting"))
    if (folder / PARTIAL).exists():
        state["unfinished"] = True
    return state


def _setup_stats(folder: Path) -> dict | None:
    """``folder/setup.json`` (None when missing, unreadable or not a JSON object)."""
    import json

    try:
        stats = json.loads((folder / "setup.json").read_text())
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None


def _is_full(stats: dict) -> bool:
    """Whether ``setup.json``'s ``stats`` describe a full set-up (``full``; files written before that
    flag: no ``config.max_poses``)."""
    if "full" in stats:
        return stats["full"] is True
    config = stats.get("config")
    return not isinstance(config, dict) or config.get("max_poses") is None


def setup_state_problem(state) -> str | None:
    """What is wrong with the weights a :func:`setup_state` describes, for messages (None: nothing)."""
    if not isinstance(state, dict):
        return None
    if state.get("unfinished"):
        return "an unfinished 'fit3d setup-model' (some weights may have been an earlier set-up's)"
    if not state.get("full", True):
        return "a reduced 'fit3d setup-model' (e.g. --quick: fine to check an installation, not to fit with)"
    if state.get("retargeting") != SETUP_RETARGETING:
        return ("a 'fit3d setup-model' of an earlier fit3d (its pose set's spine and head lean by the difference of "
                "anny's and the model's rest poses)")
    return None


def setup_command(body) -> str:
    """``run 'fit3d setup-model --model M --model-path FILE [--gender G]'``: the set-up of ``body``'s
    own model file, named itself (its folder may hold another file that the search prefers, a
    SMPL-X ``.npz`` beside the ``.pkl``, or none where the search looks: AMASS's ``male/model.npz``;
    its gender included: SMPL's male, female and neutral files are set up apart)."""
    path = getattr(body, "model_file", None)
    gender = str(getattr(body, "gender", "neutral"))
    return (f"run 'fit3d setup-model --model {body.name} --model-path {path if path else 'FILE'}"
            f"{'' if gender == 'neutral' else ' --gender ' + gender}'")


def setup_hint(body) -> str:
    """One line saying how to make the missing weights of ``body``, with the expected time
    (:func:`said_setup_minutes`)."""
    return (f"{setup_command(body)} once (about {said_setup_minutes()} minutes on a 2-core CPU "
            f"with nothing else running, longer beside other jobs) to learn the {body.name} priors and regressor "
            "from the bundled mocap")


#: What each of :data:`KINDS` is, for messages.
KIND_NAMES = {"gmm": "GMM prior", "vae": "VAE prior", "articulation": "articulation prior",
              "prototypes": "prototype memory", "regressor": "pretrained regressor",
              "pose_set": "retargeted pose set"}


def existing_weights(body, kind: str, alternative: str = "") -> Path:
    """:func:`weights_path`, checked to exist. ``alternative``: appended to the message (the
    caller's other way to give the weights, e.g. ``" (or pass --regressor)"``).

    Raises:
        KeyError: unknown kind.
        FileNotFoundError: not made yet (a SMPL-family model before ``fit3d setup-model``),
            in one line saying how to make it (:func:`setup_hint`).
    """
    path = Path(weights_path(body, kind))
    if not path.is_file():
        raise FileNotFoundError(f"no {KIND_NAMES[kind]} for this {body.name} model yet: {setup_hint(body)}"
                                f"{alternative}")
    return path
