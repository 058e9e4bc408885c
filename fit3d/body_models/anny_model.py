"""The anny body model (NAVER LABS, Apache-2.0) behind fit3d's body-model interface.

* Rig: anny's default rig without fingers, toes and eyes (36 bones). fit3d
  articulates 19 SMPL-like bones in anny's ``local-ref`` parameterisation
  (rotations in world-aligned axes about each bone's head, as SMPL's
  ``body_pose``); every other bone stays at rest.
* Shape: ``betas`` ``(B, 6)`` are logits of anny's phenotype parameters
  ``gender, age, muscle, weight, height, proportions`` (each in [0, 1]):
  ``phenotype = sigmoid(betas + logit(MEAN_PHENOTYPE))``, so ``betas = 0`` is an
  average young adult of neutral gender.
* Frames: anny is Z-up, faces -Y and rests in an A-pose. :data:`ANNY_TO_CANONICAL`
  maps it to SMPL's canonical frame (Y up, facing +Z), the only place this
  conversion happens; ``body_pose`` axes are expressed in that canonical frame
  and ``global_orient`` rotates the canonical body about its root joint into the
  OpenCV camera frame. Unlike SMPL, ``transl`` is the camera-frame position of
  the root joint (the pelvis), whatever the shape.
* Keypoints: anny's COCO regressor (17 COCO + 6 foot points). Regression and
  linear blend skinning are both linear, so while fitting the keypoints are
  computed exactly from the 36 bone transforms and per-bone anchor points
  (``keypoint_k = sum_b T_b a_kb(shape)``, ``a`` linear in the blendshape
  coefficients) without skinning any vertex; the full mesh is computed only
  when ``return_vertices=True``.
"""

from __future__ import annotations

import dataclasses
import weakref

import roma
import torch
from anny.models.rigged_model import RiggedModelWithLinearBlendShapes  # imports no NVIDIA warp: fit3d skins with "lbs"

from fit3d.body_models.anny_assets import load_model_data
from fit3d.body_models.anny_kinematics import AnnyKinematics, poses_per_shape
from fit3d.body_models.base import BodyModel, BodyOutput
from fit3d.data.conventions import KeypointConvention
from fit3d.geometry import special_procrustes

#: fit3d joint name -> anny bone label. Root first; the others are ``body_pose``.
ANNY_JOINTS: dict[str, str] = {
    "pelvis": "root",
    "left_hip": "upperleg01.L",
    "right_hip": "upperleg01.R",
    "spine1": "spine05",
    "left_knee": "lowerleg01.L",
    "right_knee": "lowerleg01.R",
    "spine2": "spine03",
    "left_ankle": "foot.L",
    "right_ankle": "foot.R",
    "spine3": "spine01",
    "neck": "neck01",
    "left_collar": "clavicle.L",
    "right_collar": "clavicle.R",
    "head": "head",
    "left_shoulder": "upperarm01.L",
    "right_shoulder": "upperarm01.R",
    "left_elbow": "lowerarm01.L",
    "right_elbow": "lowerarm01.R",
    "left_wrist": "wrist.L",
    "right_wrist": "wrist.R",
}

PHENOTYPES = ("gender", "age", "muscle", "weight", "height", "proportions")
#: Phenotype at ``betas = 0``. anny's age anchors are newborn, baby, child,
#: young, old at -1/3, 0, 1/3, 2/3, 1: 2/3 is a young adult (~25 years).
MEAN_PHENOTYPE = (0.5, 2.0 / 3.0, 0.5, 0.5, 0.5, 0.5)

#: Rotation from anny's frame (Z up, facing -Y) to the canonical frame (Y up, facing +Z):
#: ``(x, y, z) -> (x, z, -y)``.
ANNY_TO_CANONICAL = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

def _submodel_data(data, vertex_idx: torch.Tensor):
    """ModelData restricted to the vertices ``vertex_idx`` (no faces, no textures)."""
    return dataclasses.replace(
        data,
        template_vertices=data.template_vertices[vertex_idx],
        faces=torch.zeros((0, 3), dtype=torch.int64),
        blendshapes=data.blendshapes[:, vertex_idx],
        vertex_bone_weights=data.vertex_bone_weights[vertex_idx],
        vertex_bone_indices=data.vertex_bone_indices[vertex_idx],
        base_mesh_vertex_indices=data.base_mesh_vertex_indices[vertex_idx],
        texture_coordinates=None,
        face_texture_coordinate_indices=None,
    )


class AnnyModel(BodyModel):
    """anny as a :class:`~fit3d.body_models.base.BodyModel` (see module docstring).

    Args:
        device: where the buffers live.
    Raises:
        ImportError: anny is not installed.
        ValueError: an anny version that refines its rest orientations (fit3d's own rest skeleton
            and kinematics would differ from it).
    """

    name = "anny"
    num_betas = len(PHENOTYPES)
    groups_shapes = True

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        import anny

        data = load_model_data()
        kwargs = dict(
            skinning_method="lbs",
            pose_parameterization="local-ref",
            bone_orientation="cached",
            root_identity_orientation=False,
        )
        self.full = anny.Anny.from_model_data(data, **kwargs)
        regressor = anny.KeypointsRegressor.coco(self.full)
        self.keypoint_convention = KeypointConvention("anny_coco23", tuple(regressor.labels))
        W = regressor.regression_weights.float()
        self.register_buffer("regressor_full", W, persistent=False)
        # The skeleton alone (no vertex): rest bone poses and forward kinematics.
        self.skeleton = anny.Anny.from_model_data(_submodel_data(data, torch.zeros(0, dtype=torch.long)), **kwargs)
        if getattr(self.skeleton, "rest_orientation_refiner", None) is not None:  # _rest_bones has no refiner
            raise ValueError("this anny version refines its rest orientations; fit3d's rest skeleton does not")
        self._init_keypoint_anchors(W)

        bone_labels = list(self.full.bone_labels)
        self.joint_names = tuple(ANNY_JOINTS)
        self.register_buffer(
            "joint_bones", torch.tensor([bone_labels.index(b) for b in ANNY_JOINTS.values()]), persistent=False
        )
        self.num_bones = len(bone_labels)
        self.register_buffer("to_canonical", ANNY_TO_CANONICAL.clone(), persistent=False)
        self.kinematics = AnnyKinematics(self.skeleton, self.joint_bones[1:], ANNY_TO_CANONICAL, self.pair_keypoint,
                                         self.pair_bone, len(self.keypoint_convention))
        self._init_phenotype_tables()
        mean = torch.tensor(MEAN_PHENOTYPE)
        self.register_buffer("phenotype_offset", torch.log(mean / (1 - mean)), persistent=False)
        self._rest_cache = None  # see _rest_skeleton
        self.to(device)
        self._hinge_axes = self._compute_hinge_axes()

    # ------------------------------------------------------------------ helpers
    def phenotype(self, betas: torch.Tensor) -> torch.Tensor:
        """``(B, 6)`` anny phenotype parameters in (0, 1) from ``betas`` logits."""
        return torch.sigmoid(betas + self.phenotype_offset)

    def _init_keypoint_anchors(self, W: torch.Tensor) -> None:
        """Per-bone keypoint anchors: with skin weights ``s_vb`` and rest vertices
        ``v = v0 + sum_c coeff_c d_c``, ``keypoint_k = sum_b T_b a_kb`` with the
        homogeneous ``a_kb = sum_v W_kv s_vb [v; 1]``, i.e. ``a = A0 + sum_c coeff_c A_c``.
        Only the (keypoint, bone) pairs with weight are kept: ``anchor_rest (P, 4)``,
        ``anchor_blend (C, P*4)``, ``pair_keypoint`` / ``pair_bone (P,)``."""
        used = torch.nonzero(W.abs().sum(0) > 0).squeeze(1)
        w = W[:, used]
        skin = torch.zeros(len(used), self.full.bone_count)
        skin.scatter_add_(1, self.full.vertex_bone_indices[used].long(), self.full.vertex_bone_weights[used].float())
        ws = w[:, :, None] * skin[None]  # (K, V', NB)
        a0 = torch.einsum("kvb,vd->kbd", ws, self.full.template_vertices[used].float())
        a0 = torch.cat([a0, ws.sum(1)[..., None]], -1)  # homogeneous coordinate: sum of weights
        ac = torch.einsum("kvb,cvd->ckbd", ws, self.full.blendshapes[:, used].float())
        ac = torch.cat([ac, torch.zeros_like(ac[..., :1])], -1)
        pairs = torch.nonzero((a0.abs().sum(-1) > 0) | (ac.abs().sum((0, -1)) > 0))
        k, b = pairs[:, 0], pairs[:, 1]
        self.register_buffer("pair_keypoint", k, persistent=False)
        self.register_buffer("pair_bone", b, persistent=False)
        self.register_buffer("anchor_rest", a0[k, b], persistent=False)  # (P, 4)
        self.register_buffer("anchor_blend", ac[:, k, b].flatten(1), persistent=False)  # (C, P*4)

    def _init_phenotype_tables(self) -> None:
        """Index tables for :meth:`blendshape_coefficients`.

        anny forms each phenotype blendshape's weight as the product, over a binary
        mask of 26 variations (``male``, ``young``, ``maxweight``...), of the
        variations' interpolation weights. Each mask row selects 3-6 variations, so
        gathering them and multiplying is much cheaper (and has a cheaper
        backward) than anny's masked product over all 26 columns. Rows with fewer
        variations point their spare columns at a constant 1.
        """
        from anny.models.model_data import PHENOTYPE_VARIATIONS

        mask = self.full.stacked_phenotype_blend_shapes_mask > 0.5
        n_var = mask.shape[1]
        width = int(mask.sum(1).max())
        idx = torch.full((mask.shape[0], width), n_var, dtype=torch.long)
        for r in range(mask.shape[0]):
            cols = torch.nonzero(mask[r]).squeeze(1)
            idx[r, : len(cols)] = cols
        self.register_buffer("variation_index", idx, persistent=False)
        self.variation_groups = [(k, len(v)) for k, v in PHENOTYPE_VARIATIONS.items()]

    def blendshape_coefficients(self, phenotype: torch.Tensor) -> torch.Tensor:
        """``(B, 136)`` anny compact blendshape coefficients for ``(B, 6)`` phenotypes.

        Equal to anny's own ``_get_phenotype_blendshape_coefficients`` with the
        phenotypes not fitted (cupsize, firmness) at 0.5 and the three race
        weights at 1/3 (tested).
        """
        from anny.utils.interpolation import linear_interpolation_coefficients

        B = phenotype.shape[0]
        cols = []
        for group, n in self.variation_groups:
            if group == "race":
                cols.append(phenotype.new_full((B, n), 1.0 / 3.0))
                continue
            value = phenotype[:, PHENOTYPES.index(group)] if group in PHENOTYPES else phenotype.new_full((B,), 0.5)
            cols.append(linear_interpolation_coefficients(value, self.full.anchors[group]))
        cols.append(phenotype.new_ones(B, 1))
        variations = torch.cat(cols, dim=1)
        idx = self.variation_index
        weights = variations.index_select(1, idx[:, 0])
        for i in range(1, idx.shape[1]):  # column products: a cheaper backward than prod()
            weights = weights * variations.index_select(1, idx[:, i])
        return weights @ self.full.phenotype_blendshape_projection

    def _deltas(self, body_pose: torch.Tensor) -> torch.Tensor:
        """``(B, NB, 4, 4)`` anny local-ref deltas: ``body_pose`` (canonical axes) on the
        articulated bones, identity elsewhere (root included: orientation is applied
        outside anny)."""
        B = body_pose.shape[0]
        C = self.to_canonical
        rot_anny = body_pose @ C  # C^T v for row vectors: axes back into anny's frame
        R = roma.rotvec_to_rotmat(rot_anny)
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        full = eye.expand(B, self.num_bones, 3, 3).clone()
        full[:, self.joint_bones[1:]] = R
        D = torch.zeros(B, self.num_bones, 4, 4, dtype=R.dtype, device=R.device)
        D[..., :3, :3] = full
        D[..., 3, 3] = 1.0
        return D

    def _compute_hinge_axes(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            p = self.neutral_params(1)
            out = self.forward(p["global_orient"], p["body_pose"], p["betas"], p["transl"])
        j = dict(zip(self.joint_names, out.joints_3d[0]))
        kp = dict(zip(self.keypoint_convention.names, out.keypoints_3d[0]))
        z = torch.tensor([0.0, 0.0, 1.0], device=self.device)
        axes = {}
        for side in ("left", "right"):
            forearm = kp[f"{side}_wrist"] - j[f"{side}_elbow"]
            axes[f"{side}_elbow"] = torch.nn.functional.normalize(torch.linalg.cross(forearm, z), dim=0)
            shin = kp[f"{side}_ankle"] - j[f"{side}_knee"]
            axes[f"{side}_knee"] = torch.nn.functional.normalize(torch.linalg.cross(z, shin), dim=0)
        return axes

    def hinge_axes(self) -> dict[str, torch.Tensor]:
        """Flexion axes of elbows (forearm towards +Z) and knees (shin towards -Z),
        canonical frame, from the rest pose."""
        return {k: v.to(self.device) for k, v in self._hinge_axes.items()}

    def faces(self) -> torch.Tensor:
        """``(F, 3)`` triangles of the full anny mesh."""
        return self.full.faces

    def _rest_skeleton(self, betas: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """:meth:`AnnyKinematics.shape_terms` of these shapes.

        They depend on the shape only and their rest orientations (a special Procrustes
        per bone) cost more than the posing itself, so while the shape is not being
        optimised (``betas`` without gradient, e.g. stages that move the pose only) the
        last result is reused when the same shapes come again: the same tensor, unchanged since
        (its version counter: no value read back, so no GPU sync per iteration), else equal values
        (compared: one sync). Writes that bypass the version counter (``betas.data[...] = ...``,
        through a NumPy view) are not seen on the same tensor: change shapes with ordinary
        in-place ops or pass a new tensor. Inference-mode tensors have no version counter: compared.
        """
        cache = self._rest_cache
        if not betas.requires_grad and cache is not None:
            if cache[2]() is betas and cache[3] == _version(betas):
                return cache[1]
            if (cache[0].shape == betas.shape and cache[0].device == betas.device and cache[0].dtype == betas.dtype
                    and torch.equal(cache[0], betas)):
                self._rest_cache = (cache[0], cache[1], weakref.ref(betas), _version(betas))  # (next time)
                return cache[1]
        coeffs = self.blendshape_coefficients(self.phenotype(betas))
        anchors = self.anchor_rest + (coeffs @ self.anchor_blend).view(-1, *self.anchor_rest.shape)
        terms = self.kinematics.shape_terms(*self._rest_bones(coeffs), anchors)
        if not betas.requires_grad:
            self._rest_cache = (betas.detach().clone(), tuple(t.detach() for t in terms), weakref.ref(betas),
                                _version(betas))
        return terms

    def _apply(self, fn, *args, **kwargs):
        """As :meth:`torch.nn.Module._apply` (``.to()``, ``.double()``, ``.cuda()``), forgetting the
        rest skeleton :meth:`_rest_skeleton` keeps (a review: after ``.double()`` the float32 terms
        of the zero shapes made at construction were reused, and SMPLify failed on a dtype clash)."""
        self._rest_cache = None
        return super()._apply(fn, *args, **kwargs)

    def _rest_bones(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """anny's rest bone orientations ``(B, NB, 3, 3)`` and heads ``(B, NB, 3)`` for blendshape
        coefficients ``(B, C)``: its ``bone_orientation="cached"`` rest model (the special
        Procrustes of cross-covariances linear in the coefficients; anny's
        ``RiggedModel._get_cached_rest_model``) with :func:`fit3d.geometry.special_procrustes`,
        the same rotations and gradients at a fraction of the cost (tested against anny)."""
        sk = self.skeleton
        heads = sk.template_bone_heads[None] + torch.einsum("bc,cki->bki", coeffs, sk.bone_heads_blendshapes)
        M = sk.bone_template_orientation_matrices[None] + torch.einsum("bc,ckij->bkij", coeffs,
                                                                       sk.bone_orientation_blendshapes)
        return special_procrustes(M), heads

    # ------------------------------------------------------------------ forward
    def canonical(self, body_pose: torch.Tensor, betas: torch.Tensor, return_vertices: bool = False) -> BodyOutput:
        """anny posed in the canonical frame, root joint at the origin.

        ``body_pose`` ``(B, 19, 3)``, ``betas`` ``(B, 6)``, or ``(B / G, 6)`` for ``G``
        consecutive poses per shape (``groups_shapes``: each shape's rest skeleton is computed
        once); returns joints_3d ``(B, 20, 3)``, keypoints_3d ``(B, 23, 3)`` and, when asked,
        vertices ``(B, 13718, 3)``.

        Raises:
            ValueError: the shapes do not divide the poses (each shape serves the same number
                of consecutive poses).
        """
        if return_vertices:
            C = self.to_canonical.T
            B = max(body_pose.shape[0], betas.shape[0])
            G = poses_per_shape(betas.shape[0], B)
            body_pose = body_pose.expand(B, *body_pose.shape[1:])
            deltas = self._deltas(body_pose)
            coeffs = self.blendshape_coefficients(self.phenotype(betas))
            coeffs = coeffs.expand(B, -1) if len(coeffs) == 1 else coeffs.repeat_interleave(G, 0)
            # The rigged-model forward of anny, given blendshape coefficients directly.
            out = RiggedModelWithLinearBlendShapes.forward(self.full, deltas, coeffs)
            verts = out["vertices"]
            kp = torch.einsum("kv,bvd->bkd", self.regressor_full, verts)
            joints = out["bone_poses"][:, self.joint_bones, :3, 3]
            return BodyOutput(vertices=verts @ C, joints_3d=joints @ C, keypoints_3d=kp @ C)
        joints, kp = self.kinematics(body_pose, self._rest_skeleton(betas), self.joint_bones)  # canonical frame
        return BodyOutput(vertices=None, joints_3d=joints, keypoints_3d=kp)


def _version(t: torch.Tensor) -> int | None:
    """``t``'s version counter (bumped by every in-place change), None for an inference-mode
    tensor, which has none (never equal to a recorded version: compared by value)."""
    return None if torch.is_inference(t) else t._version
