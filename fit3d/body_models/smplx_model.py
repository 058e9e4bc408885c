"""SMPL, SMPL-H and SMPL-X through the ``smplx`` package, with the user's own model files.

The model files are licensed by the Max Planck Institute and cannot ship with
fit3d: register and download them from

* SMPL: https://smpl.is.tue.mpg.de  (``SMPL_NEUTRAL.pkl`` ...)
* SMPL-H: https://mano.is.tue.mpg.de  (``SMPLH_MALE.pkl`` ...)
* SMPL-X: https://smpl-x.is.tue.mpg.de  (``SMPLX_NEUTRAL.npz`` ...)

then pass ``--model-path`` (a file, or a folder holding them directly or in
``smpl/``, ``smplh/``, ``smplx/`` subfolders, as ``smplx.create`` expects, under smplx's names
or the downloads' own: SMPL's ``basicmodel_m_lbs_10_207_0_v1.1.0.pkl``, AMASS's
``male/model.npz``; :func:`find_model_file`).

Only the body is fitted: ``body_pose`` is SMPL's 23 joints, or the 21 body
joints of SMPL-H/SMPL-X (hands, jaw and eyes at rest). Keypoints: COCO limbs
from the model's joints, face and foot points from smplx's vertex selection;
COCO hips get weight 0 outside the camera stage (:data:`ZERO_WEIGHT_KEYPOINTS`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fit3d.body_models.base import BodyModel, BodyOutput
from fit3d.data.conventions import KeypointConvention
from fit3d.geometry import small_matmul

log = logging.getLogger(__name__)

MODEL_URLS = {
    "smpl": "https://smpl.is.tue.mpg.de",
    "smplh": "https://mano.is.tue.mpg.de",
    "smplx": "https://smpl-x.is.tue.mpg.de",
}
#: Joints (pelvis first) of SMPL's kinematic tree that fit3d exposes.
SMPL_BODY_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip
NUM_JOINTS = {"smpl": 24, "smplh": 52, "smplx": 55}
#: smplx's extra vertex keypoints, in the order its VertexJointSelector appends them.
EXTRA_KEYPOINTS = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip
#: Keypoints matched to the model's joints that are not the annotated points: COCO /
#: OpenPose hips are on the outside of the hip (near the greater trochanter), SMPL's hip
#: joints are the femoral heads, ~3-4 cm inward and lower (measured on the SMPL-like test
#: model: 34 mm from anny's COCO hip). As SPIN and EFT do, they get weight 0 in the
#: fitters' reprojection terms, except in the camera stage's torso fit, where the
#: shoulders alone would leave the depth badly constrained.
ZERO_WEIGHT_KEYPOINTS = ("left_hip", "right_hip")
LIMB_KEYPOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip


#: How the official downloads name each gender's file: SMPL's ``basicmodel_{neutral,m,f}_lbs_10_207_0_v1.x.pkl``
#: (SMPLify's ``basicModel_neutral_...``), AMASS's ``{neutral,male,female}/model.npz``.
_GENDER_LETTERS = {"neutral": "neutral", "male": "m", "female": "f"}


def _candidates(folder: Path, model_type: str, gender: str) -> list[str]:
    """The names ``folder`` may hold the model under, in the order they are tried: smplx's
    ``<TYPE>_<GENDER>.npz|pkl`` (any letter case: MANO's ``SMPLH_male.pkl``), SMPL's own
    ``basicmodel_<g>_lbs_10_207_0_v1.*.pkl``, AMASS's ``<gender>/model.npz``."""
    stem = f"{model_type.upper()}_{gender.upper()}"
    names = [f"{stem}.npz", f"{stem}.pkl"]
    try:
        listed = sorted(f.name for f in folder.iterdir() if f.is_file())
    except OSError:
        listed = []
    lower = {n.lower(): n for n in listed}
    names += [lower[n.lower()] for n in names[:2] if n.lower() in lower and lower[n.lower()] not in names]
    if model_type == "smpl":
        prefix = f"basicmodel_{_GENDER_LETTERS[gender]}_lbs_10_207_0_v"
        names += [n for n in listed if n.lower().startswith(prefix) and n.lower().endswith(".pkl")]
    else:
        names.append(f"{gender}/model.npz")
    return names


def file_gender(path: str | Path) -> str | None:
    """The gender a model file's name gives (``SMPL_MALE.pkl``, ``basicmodel_f_lbs_...``,
    ``male/model.npz``), None when it gives none."""
    path = Path(path)
    name = path.name.lower()
    for gender, letter in _GENDER_LETTERS.items():
        if name.endswith((f"_{gender}.pkl", f"_{gender}.npz")) or name.startswith(f"basicmodel_{letter}_lbs_"):
            return gender
        if name == "model.npz" and path.parent.name.lower() == gender:
            return gender
    return None


def find_model_file(model_type: str, model_path: str | Path | None, gender: str) -> Path:
    """Locate the ``gender`` model file under ``model_path`` (or check the file given).

    Looks in ``model_path`` and ``model_path/<model_type>`` for the names smplx uses
    (``SMPL_NEUTRAL.pkl``, ``SMPLX_MALE.npz``; any letter case) and the official downloads'
    own names (SMPL's ``basicmodel_m_lbs_10_207_0_v1.1.0.pkl``, AMASS's ``female/model.npz``).

    Raises:
        FileNotFoundError: with the search locations and the download address.
        ValueError: the file given is, by its name, another gender's model.
    """
    stem = f"{model_type.upper()}_{gender.upper()}"
    if model_path is None:
        raise FileNotFoundError(
            f"the {model_type.upper()} model needs --model-path (model_path= in Python): the licensed model files "
            f"are not bundled; download the model from {MODEL_URLS[model_type]} (its files, e.g. {stem}.pkl or "
            f"the download's own names, are found in the folder you pass)"
        )
    p = Path(model_path).expanduser()
    if p.is_file():
        named = file_gender(p)
        if named not in (None, gender):
            raise ValueError(f"{p.name} is the {named} {model_type.upper()} model, but gender {gender} was asked "
                             f"for: pass --gender {named} (gender='{named}' in Python), or the {gender} model's file")
        return p
    tried = []
    for folder in (p, p / model_type):
        for name in _candidates(folder, model_type, gender):
            cand = folder / name
            tried.append(str(cand))
            if cand.is_file():
                return cand
    raise FileNotFoundError(
        f"no {gender} {model_type.upper()} model file found (looked for {', '.join(dict.fromkeys(tried))}"
        + (f", basicmodel_{_GENDER_LETTERS[gender]}_lbs_10_207_0_v1.*.pkl" if model_type == "smpl" else "")
        + "); "
        f"download it from {MODEL_URLS[model_type]} and pass its folder with --model-path"
    )


class SMPLXModel(BodyModel):
    """SMPL / SMPL-H / SMPL-X as a :class:`~fit3d.body_models.base.BodyModel`.

    Args:
        model_type: ``"smpl"``, ``"smplh"`` or ``"smplx"``.
        model_path: file or folder of the licensed model (see module docstring).
        gender: ``"neutral"``, ``"male"`` or ``"female"`` (SMPL-H has no neutral model).
        num_betas: shape coefficients (10 by default).
        device: where the buffers live.
    Raises:
        FileNotFoundError: the model file is missing (the message says where to get it).
        ValueError: unknown ``model_type``, a file smplx cannot read, or a file of another model
            (its joint count is not ``model_type``'s: a SMPL-H file given as SMPL).
    """

    def __init__(
        self,
        model_type: str = "smpl",
        model_path: str | Path | None = None,
        gender: str = "neutral",
        num_betas: int = 10,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        import smplx

        if model_type not in NUM_JOINTS:
            raise ValueError(f"unknown SMPL family model {model_type!r}; use smpl, smplh or smplx")
        path = find_model_file(model_type, model_path, gender)
        kwargs = dict(gender=gender, num_betas=num_betas, ext=path.suffix[1:])
        if model_type in ("smplh", "smplx"):
            kwargs.update(use_pca=False, flat_hand_mean=True)
        try:
            # the class itself, not smplx.create, which takes the model type from a file's name
            # (SMPL's own basicmodel_m_lbs_10_207_0_v1.1.0.pkl, AMASS's model.npz)
            cls = {"smpl": smplx.SMPL, "smplh": smplx.SMPLH, "smplx": smplx.SMPLX}[model_type]
            said = io.StringIO()  # smplx prints "WARNING: You are using a SMPL model, with only 10 shape
            with contextlib.redirect_stdout(said):  # coefficients." on stdout for every model: to the log
                self.smpl = _construct(cls, path, kwargs)
            for line in filter(None, map(str.strip, said.getvalue().splitlines())):
                log.debug("smplx: %s", line)
        except Exception as e:  # noqa: BLE001 - pickle, zip, numpy and key errors of a bad file: one clear line
            detail = str(e).splitlines()[0] if str(e) else ""
            if "chumpy" in detail:  # SMPLify's and MANO's old .pkl files pickle chumpy objects
                raise ValueError(f"{path} holds chumpy objects (an old SMPL / MANO .pkl), which fit3d does not read: "
                                 f"use SMPL v1.1.0's .pkl, AMASS's 'Extended SMPL+H' .npz or SMPL-X's .npz (from "
                                 f"{MODEL_URLS[model_type]}), or convert it with smplx's tools/clean_ch.py") from e
            raise ValueError(f"{path} is not a readable {model_type.upper()} model file ({type(e).__name__}: "
                             f"{detail}): a file of another model (SMPL's are .pkl, SMPL-X's usually .npz: give "
                             f"its --model), or a damaged one (download it again from {MODEL_URLS[model_type]})") from e
        joints = int(self.smpl.J_regressor.shape[0])
        if joints != NUM_JOINTS[model_type]:  # a SMPL-H file read as SMPL: it loads, then every pose fails
            other = next((m for m, n in NUM_JOINTS.items() if n == joints), None)
            raise ValueError(f"{path} is a model of {joints} joints, not {model_type.upper()}'s "
                             f"{NUM_JOINTS[model_type]}" + (f": a {other.upper()} file (use --model {other})"
                                                            if other else ""))
        self.name = model_type
        self.gender = gender
        self.model_file = path  #: the licensed file (its hash keys the weights of fit3d setup-model)
        self.num_betas = self.smpl.num_betas
        n_body = 24 if model_type == "smpl" else 22
        self.joint_names = (SMPL_BODY_JOINTS + ("left_hand", "right_hand"))[:n_body]
        offset = NUM_JOINTS[model_type]
        index = {n: SMPL_BODY_JOINTS.index(n) for n in LIMB_KEYPOINTS}
        index.update({n: offset + i for i, n in enumerate(EXTRA_KEYPOINTS)})
        names = tuple(index)
        self.keypoint_convention = KeypointConvention(f"{model_type}_coco23", names)
        self.register_buffer("keypoint_index", torch.tensor([index[n] for n in names]), persistent=False)
        self.to(device)

    def keypoint_weights(self) -> torch.Tensor:
        """Weight 0 for the hips (:data:`ZERO_WEIGHT_KEYPOINTS`), 1 elsewhere."""
        names = self.keypoint_convention.names
        return torch.tensor([0.0 if n in ZERO_WEIGHT_KEYPOINTS else 1.0 for n in names], device=self.device)

    def rest_parts(self, batch_size: int, like: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """SMPL-H / SMPL-X parameters that fit3d keeps at rest, as ``batch_size`` rows of zeros:
        ``left_hand_pose``, ``right_hand_pose`` ``(B, 45)`` (full axis-angle, flat hand mean),
        and for SMPL-X ``jaw_pose``, ``leye_pose``, ``reye_pose`` ``(B, 3)`` and ``expression``
        ``(B, E)``. Empty for SMPL. (smplx's own defaults are single rows, which cannot meet
        a B-row body pose.)"""
        like = like if like is not None else self.smpl.shapedirs
        z = lambda n: like.new_zeros(batch_size, n)  # noqa: E731
        out = {}
        if self.name in ("smplh", "smplx"):
            out.update(left_hand_pose=z(45), right_hand_pose=z(45))
        if self.name == "smplx":
            out.update(jaw_pose=z(3), leye_pose=z(3), reye_pose=z(3), expression=z(self.smpl.num_expression_coeffs))
        return out

    def hinge_axes(self) -> dict[str, torch.Tensor]:
        """SMPLify's bend-prior axes: elbows about -y (left) / +y (right), knees about +x."""
        t = lambda *v: torch.tensor(v, dtype=torch.float32, device=self.device)  # noqa: E731
        return {
            "left_elbow": t(0.0, -1.0, 0.0),
            "right_elbow": t(0.0, 1.0, 0.0),
            "left_knee": t(1.0, 0.0, 0.0),
            "right_knee": t(1.0, 0.0, 0.0),
        }

    def faces(self) -> torch.Tensor:
        """``(F, 3)`` triangles."""
        return torch.as_tensor(self.smpl.faces.astype("int64"), device=self.device)

    def canonical(self, body_pose: torch.Tensor, betas: torch.Tensor, return_vertices: bool = False) -> BodyOutput:
        """The model with zero global orientation and translation.

        ``body_pose`` ``(B, 23 | 21, 3)``; joints_3d ``(B, 24 | 22, 3)``; keypoints_3d ``(B, 23, 3)``.
        With ``return_vertices`` smplx's full forward; without, :meth:`_skeleton` (the same
        joints and keypoints without skinning the mesh: what every fitting iteration needs).
        """
        if not return_vertices:
            return self._skeleton(body_pose, betas)
        B = body_pose.shape[0]
        out = self.smpl(
            betas=betas,
            body_pose=body_pose.reshape(B, -1),
            global_orient=body_pose.new_zeros(B, 3),
            transl=body_pose.new_zeros(B, 3),
            return_verts=True,
            **self.rest_parts(B, body_pose),
        )
        joints = out.joints
        return BodyOutput(vertices=out.vertices, joints_3d=joints[:, : len(self.joint_names)],
                          keypoints_3d=joints[:, self.keypoint_index])

    def _skeleton_tables(self) -> dict:
        """Shape-linear rest joints and the keypoint vertices' template, shape, pose-corrective
        and skinning rows, taken once from smplx's buffers (``J = J_regressor v_shaped`` is
        linear in the betas)."""
        sm = self.smpl
        key = (sm.v_template.device, sm.v_template.dtype)
        if getattr(self, "_tables_key", None) == key:
            return self._tables
        with torch.inference_mode(False):  # (built first under inference_mode, they broke every later gradient)
            self._tables = self._build_tables(sm)
        self._tables_key = key
        return self._tables

    def _build_tables(self, sm) -> dict:
        """:meth:`_skeleton_tables`' contents, from smplx's layer ``sm``."""
        S = self.num_betas
        dirs = sm.shapedirs[:, :, :S]
        idx = sm.vertex_joint_selector.extra_joints_idxs[: len(EXTRA_KEYPOINTS)]
        P = sm.posedirs.shape[0]
        return dict(
            chain=_chain_levels(sm.parents.tolist(), sm.v_template.device),
            joints=sm.J_regressor @ sm.v_template,  # (J, 3)
            joint_dirs=torch.einsum("jv,vcs->jcs", sm.J_regressor, dirs),  # (J, 3, S)
            kp_template=sm.v_template[idx], kp_dirs=dirs[idx],  # (K, 3), (K, 3, S)
            kp_posedirs=sm.posedirs.view(P, -1, 3)[:, idx],  # (P, K, 3)
            kp_weights=sm.lbs_weights[idx],  # (K, J)
        )

    def _skeleton(self, body_pose: torch.Tensor, betas: torch.Tensor) -> BodyOutput:
        """smplx's joints and vertex keypoints without skinning the mesh: forward kinematics
        of the shaped rest joints, and linear blend skinning of the 11 keypoint vertices only
        (with their pose correctives). Same numbers as the full forward (tested)."""
        from smplx.lbs import batch_rodrigues

        t = self._skeleton_tables()
        B, J = body_pose.shape[0], NUM_JOINTS[self.name]
        full = body_pose.new_zeros(B, J, 3)
        full[:, 1 : 1 + body_pose.shape[1]] = body_pose  # root, then body; hands, jaw, eyes at rest
        rot = batch_rodrigues(full.reshape(-1, 3)).view(B, J, 3, 3)
        rest = (t["joints"] + torch.einsum("jcs,bs->bjc", t["joint_dirs"], betas)).expand(B, -1, -1)
        posed, A = _rigid_transforms(rot, rest, t["chain"])
        feat = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype, device=rot.device)).reshape(B, -1)
        v = t["kp_template"] + torch.einsum("kcs,bs->bkc", t["kp_dirs"], betas)  # betas (B | 1, S)
        v = v + (feat @ t["kp_posedirs"].flatten(1)).view(B, -1, 3)
        T = torch.einsum("kj,bjmn->bkmn", t["kp_weights"], A)
        kp = small_matmul(T[..., :3, :3], v[..., None])[..., 0] + T[..., :3, 3]
        joints = torch.cat([posed, kp], 1)
        return BodyOutput(vertices=None, joints_3d=joints[:, : len(self.joint_names)],
                          keypoints_3d=joints[:, self.keypoint_index])


#: The MANO hand-pose PCA that smplx's SMPL-H / SMPL-X read from every file, and what stands in for
#: it where a file has none (AMASS's "Extended SMPL+H" ``model.npz``, the SMPL-X files made for
#: SOMA / MoSh / AMASS): fit3d builds both with ``use_pca=False`` and ``flat_hand_mean=True``, so
#: smplx uses neither the components nor the means (it takes zeros for the flat hand).
_HAND_PCA = {"hands_componentsl": lambda: np.eye(45), "hands_componentsr": lambda: np.eye(45),
             "hands_meanl": lambda: np.zeros(45), "hands_meanr": lambda: np.zeros(45)}


def read_model_data(path: str | Path) -> dict:
    """The arrays of a SMPL-family model file (``.npz``, or a ``.pkl`` as smplx unpickles it), a
    sparse ``J_regressor`` made dense.

    Raises:
        OSError, ValueError, pickle.UnpicklingError, ModuleNotFoundError: an unreadable file (an
            old MANO / SMPLify ``.pkl`` needs chumpy).
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=True) as z:
            data = dict(z)
    else:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    return {k: (v.toarray() if hasattr(v, "toarray") else v) for k, v in data.items()}


def _construct(cls, path: Path, kwargs: dict):
    """``cls(model_path=path, **kwargs)`` (a smplx model class); a SMPL-H / SMPL-X file without the
    MANO hand PCA (:data:`_HAND_PCA`), which smplx reads even with ``use_pca=False``, is read
    again from a copy with that PCA filled in."""
    try:
        return cls(model_path=str(path), **kwargs)
    except AttributeError as e:
        if not any(k in str(e) for k in _HAND_PCA):
            raise
    data = read_model_data(path)
    data.update({k: make() for k, make in _HAND_PCA.items() if k not in data})
    log.info("%s has no MANO hand PCA (an AMASS / MoSh file): hands at rest, flat, as always in fit3d", path)
    with tempfile.TemporaryDirectory(prefix="fit3d-smplx-") as tmp:
        copy = Path(tmp) / "model.npz"
        np.savez(copy, **data)
        return cls(model_path=str(copy), **dict(kwargs, ext="npz"))


class _Chain(NamedTuple):
    """SMPL's kinematic tree by depth (:func:`_chain_levels`): per level after the root, the
    joints of that depth, their parents' joint indices and their parents' places in the previous
    level; and ``inverse``, each joint's place in the levels concatenated."""

    levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    inverse: torch.Tensor


def _chain_levels(parents: list[int], device) -> _Chain:
    """:class:`_Chain` of ``parents`` (``parents[0]``, the root's, ignored): Python lists in, index
    tensors on ``device`` out, so that posing never reads an index back from the device (smplx's
    ``batch_rigid_transform`` indexes a list with a tensor per joint: a GPU sync each)."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    by_depth = [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]
    levels = []
    for d in range(1, len(by_depth)):
        place = {j: i for i, j in enumerate(by_depth[d - 1])}
        levels.append(tuple(torch.tensor(v, device=device) for v in (
            by_depth[d], [parents[j] for j in by_depth[d]], [place[parents[j]] for j in by_depth[d]])))
    order = [j for level in by_depth for j in level]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return _Chain(levels, inverse.to(device))


def _rigid_transforms(rot: torch.Tensor, rest: torch.Tensor, chain: _Chain) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kinematics of SMPL's tree: each joint's world transform is its parent's times its
    own (rotation ``rot`` about its rest position ``rest``), a depth level at a time.

    Args:
        rot: ``(B, J, 3, 3)`` local rotations. rest: ``(B, J, 3)`` rest joint positions.
        chain: :func:`_chain_levels` of the tree.
    Returns:
        ``(posed joints (B, J, 3), A (B, J, 4, 4))``: the posed joint positions and the skinning
        transforms (world transform times the inverse rest transform), as smplx's
        ``batch_rigid_transform`` returns them (equal: tested through the full forward).
    """
    B, J = rest.shape[:2]
    rots, trans = [rot[:, :1]], [rest[:, :1]]
    for joints, parent_joints, parent_place in chain.levels:
        pr, pt = rots[-1][:, parent_place], trans[-1][:, parent_place]
        offset = rest[:, joints] - rest[:, parent_joints]
        rots.append(small_matmul(pr, rot[:, joints]))
        trans.append(small_matmul(pr, offset[..., None])[..., 0] + pt)
    R = torch.cat(rots, 1)[:, chain.inverse]
    t = torch.cat(trans, 1)[:, chain.inverse]
    top = torch.cat([R, (t - small_matmul(R, rest[..., None])[..., 0])[..., None]], -1)
    return t, torch.cat([top, rot.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(B, J, 1, 4)], -2)
