"""Fitting schedules as plain data.

A schedule is a list of :class:`Stage`; each says which parameters move, for
how many iterations, at which learning rate and with which loss weights. The
defaults follow SMPLify (Bogo et al. 2016) and SPIN's in-the-loop SMPLify
(Kolotouros et al. 2019): a camera stage (translation and global orientation
from the torso, with a depth term), then all parameters with the pose prior's
weight annealed from high to low.

A schedule prints as JSON and loads from a JSON (or YAML, when PyYAML is
installed) file with :func:`load_schedule`, so users override it without code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

PARAMETERS = ("global_orient", "body_pose", "betas", "transl")
LOSS_TERMS = ("reprojection", "pose_prior", "bend", "shape", "depth", "face", "upright")


@dataclass
class Stage:
    """One optimisation stage.

    Attributes:
        name: label shown in logs.
        params: which of ``global_orient, body_pose, betas, transl`` move.
        iterations: maximum Adam steps.
        lr: Adam learning rate.
        weights: loss term -> weight; terms: reprojection, pose_prior, bend,
            shape, depth, face, upright (absent = 0); see ``fit3d.fitters.losses``.
        keypoints: ``"all"`` or ``"torso"`` (shoulders, hips and face points only).
        tolerance: per-person early stop when the relative loss change stays
            below this for ``patience`` steps.
        patience: see ``tolerance``.
        keep_rows: after ``keep_after`` iterations, only each person's ``keep_rows`` rows of
            lowest loss go on optimising (the others are frozen where they are, and keep
            their final loss; where a person's rows share one shape, the frozen rows take
            the person's final shape, and their loss is computed with it); 0 keeps every row.
            Successive halving of the hypothesis rows.
        keep_after: see ``keep_rows``.
        branch: ``""`` (every row), ``"clean"`` or ``"noisy"``. The first branched stage
            splits each person's rows: the existing rows continue as the clean branch and
            a copy of the person's best row starts the noisy branch; each person's result
            comes from the noisy branch when the clean branch's best row still misses the
            keypoints by more than SMPLify's ``noise_threshold`` (then the keypoints are
            noisy and a strongly regularised fit is the better estimate), else from the
            clean branch (exact keypoints are followed).

    Raises:
        ValueError: on construction, an unknown parameter, loss term, keypoint set or branch, a
            parameter named twice or none, negative iterations or ``keep_rows``, lr <= 0, a negative tolerance,
            patience < 1, or a field of the wrong type (a schedule file's hand edits are read through this).
    """

    name: str
    params: tuple[str, ...]
    iterations: int
    lr: float
    weights: dict[str, float] = field(default_factory=dict)
    keypoints: str = "all"
    tolerance: float = 1e-4
    patience: int = 5
    keep_rows: int = 0
    keep_after: int = 0
    branch: str = ""

    def __post_init__(self) -> None:
        self._check_types()
        self.params = tuple(self.params)
        bad = set(self.params) - set(PARAMETERS)
        if bad:
            raise ValueError(f"stage {self.name!r}: unknown parameters {sorted(bad)}; known {PARAMETERS}")
        bad = set(self.weights) - set(LOSS_TERMS)
        if bad:
            raise ValueError(f"stage {self.name!r}: unknown loss terms {sorted(bad)}; known {LOSS_TERMS}")
        if self.branch not in ("", "clean", "noisy"):
            raise ValueError(f"stage {self.name!r}: branch must be '', 'clean' or 'noisy'")
        if self.keypoints not in ("all", "torso"):
            raise ValueError(f"stage {self.name!r}: keypoints must be 'all' or 'torso'")
        if self.keep_rows < 0 or self.keep_after < 0:
            raise ValueError(f"stage {self.name!r}: keep_rows and keep_after must be >= 0")
        if self.iterations < 0 or self.lr <= 0:
            raise ValueError(f"stage {self.name!r}: iterations must be >= 0 and lr > 0")
        if self.patience < 1 or self.tolerance < 0:  # (a review: patience 0 stopped every row after 2 steps)
            raise ValueError(f"stage {self.name!r}: patience must be >= 1 and tolerance >= 0 (0: no early stop)")
        if not self.params or len(set(self.params)) != len(self.params):
            raise ValueError(f"stage {self.name!r}: params must name each optimised parameter once (it names "
                             f"{list(self.params) or 'none'})")

    def _check_types(self) -> None:
        """Raise ValueError naming the field whose value has the wrong type (a hand-edited
        schedule file's ``"iterations": 2.5`` or ``"60"`` failed every person's fit later)."""
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        wrong = []
        if not isinstance(self.name, str):
            wrong.append("name (a string)")
        if isinstance(self.params, str) or not isinstance(self.params, (list, tuple)) or \
                not all(isinstance(p, str) for p in self.params):
            wrong.append("params (a list of parameter names)")
        for f in ("iterations", "patience", "keep_rows", "keep_after"):
            if not isinstance(getattr(self, f), int) or isinstance(getattr(self, f), bool):
                wrong.append(f"{f} (a whole number)")
        for f in ("lr", "tolerance"):
            if not number(getattr(self, f)):
                wrong.append(f"{f} (a finite number)")
        if not isinstance(self.weights, dict) or not all(isinstance(k, str) and number(v) and v >= 0
                                                         for k, v in self.weights.items()):
            wrong.append("weights (loss term -> a finite number >= 0)")
        if not isinstance(self.keypoints, str) or not isinstance(self.branch, str):
            wrong.append("keypoints and branch (strings)")
        if wrong:
            raise ValueError(f"stage {self.name!r}: {'; '.join(wrong)} expected")

    @property
    def moves_body(self) -> bool:
        """Whether the stage changes the posed body's shape (not only where it is)."""
        return "body_pose" in self.params or "betas" in self.params


#: Weight of the tilt-in-depth term (``losses.upright``): 20 nominal px^2 at 90 degrees.
UPRIGHT = 20.0
#: The pose parameters (the shape stays as the coarse stage left it).
POSE = ("global_orient", "body_pose", "transl")


def default_smplify_schedule() -> list[Stage]:
    """SMPLify's staged schedule, in fit3d's loss units (see ``fit3d.fitters.losses``).

    Weights set on benchmarks of the tuning subjects only (``benchmarks/tune_smplify.py``):

    1. ``camera``: global orientation and root position from the torso and face
       keypoints, with SMPLify's depth term;
    2. ``body_coarse``: every parameter with light regularisation (strong priors here
       pull unseen motions back to the training ones);
    3. ``body_clean`` (clean branch): the pose follows the keypoints with very light
       regularisation (exact keypoints are explained exactly, the prior only decides
       between interpretations the keypoints cannot tell apart);
    4. ``body_noisy`` (noisy branch): the pose regularised as SMPLify does, for people whose
       clean fit still misses the keypoints (annotator noise): following noise moves
       limbs in depth.
    """
    return [
        Stage(
            "camera",
            ("global_orient", "transl"),
            iterations=60,
            lr=0.05,
            weights=dict(reprojection=1.0, depth=100.0, face=100.0, upright=UPRIGHT),
            keypoints="torso",
        ),
        Stage(
            "body_coarse",
            PARAMETERS,
            iterations=60,
            lr=0.04,
            weights=dict(reprojection=1.0, pose_prior=3.0, bend=10.0, shape=0.3, face=10.0, upright=2.0),
        ),
        *refinement_stages(),
    ]


def refinement_stages() -> list[Stage]:
    """The clean and noisy branches that end SMPLify (and refine EFT's output)."""
    return [
        Stage(
            "body_clean",
            POSE,
            iterations=80,
            lr=0.02,
            weights=dict(reprojection=1.0, pose_prior=0.1, bend=3.0, face=3.0, upright=0.5),
            branch="clean",
        ),
        Stage(
            "body_noisy",
            POSE,
            iterations=80,
            lr=0.02,
            weights=dict(reprojection=1.0, pose_prior=5.0, bend=100.0, face=100.0, upright=UPRIGHT),
            branch="noisy",
        ),
    ]


def fast_smplify_schedule() -> list[Stage]:
    """:func:`default_smplify_schedule` with successive halving of the hypothesis rows: after
    20 iterations the coarse stage goes on with each person's 3 best rows (of 5: two
    orientations from the rest pose, three prototype starts) and the clean branch with its 4
    best (of all 5 and 8 limb depth flips). Chosen on the validation subject's benchmarks,
    where it matched the default (77.4 vs 77.5 mm PA-MPJPE-12 with noise, 46.9 vs 46.9
    noise-free, with two prototype starts); since, it is ~1.3 mm worse than the default there
    (``docs/experiments.md``, thirty-fifth session) and on the held-out subjects it is not free
    (see README): it is opt-in, as ``examples/schedules/smplify_fast.json`` for ``fit3d smplify
    --schedule``.
    """
    return [replace(st, keep_rows=3, keep_after=20) if st.name == "body_coarse"
            else replace(st, keep_rows=4, keep_after=20) if st.branch == "clean" else st
            for st in default_smplify_schedule()]


def schedule_to_json(stages: list[Stage]) -> str:
    """The schedule as indented JSON (what :func:`load_schedule` reads)."""
    return json.dumps([asdict(s) for s in stages], indent=2)


def load_schedule(path: str | Path) -> list[Stage]:
    """Read a schedule: a JSON/YAML list of stage mappings (the fields of :class:`Stage`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that cannot be read as text, malformed JSON or YAML, or unknown fields.
        ImportError: a ``.yaml`` file without PyYAML installed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"schedule {path} cannot be read: {e}") from e
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"schedule {path} is not valid YAML: {e}") from e
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule {path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not data:
        raise ValueError(f"schedule {path} must be a list of at least one stage (fit3d print-schedule writes the "
                         "default)")
    if not all(isinstance(d, dict) for d in data):
        raise ValueError(f"schedule {path}: each stage is an object of Stage's fields (fit3d print-schedule writes "
                         "the default)")
    try:
        return [Stage(**d) for d in data]
    except (TypeError, ValueError) as e:
        raise ValueError(f"schedule {path}: {e}") from e
