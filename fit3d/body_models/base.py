"""The body-model interface every fitter is written against.

Parameters at the public boundary follow SMPL's names and conventions:

* ``global_orient`` ``(B, 3)`` axis-angle, rotating the model's canonical frame
  (Y up, facing +Z, as SMPL) about its root joint into the camera frame;
* ``body_pose`` ``(B, J, 3)`` axis-angle, one rotation per articulated joint;
* ``betas`` ``(B, S)`` the model's shape vector;
* ``transl`` ``(B, 3)`` metres.

Outputs are in the OpenCV camera frame (x right, y down, z forward), metres.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import roma
import torch

from fit3d.data.conventions import KeypointConvention
from fit3d.geometry import small_matmul


@dataclass
class BodyOutput:
    """What a body model returns.

    Attributes:
        vertices: ``(B, V, 3)`` metres, or ``None`` when only keypoints were asked for.
        joints_3d: ``(B, J+1, 3)`` skeleton joints (root first, then one per
            ``body_pose`` joint), metres.
        keypoints_3d: ``(B, K, 3)`` keypoints in ``BodyModel.keypoint_convention``, metres.
    """

    vertices: torch.Tensor | None
    joints_3d: torch.Tensor
    keypoints_3d: torch.Tensor


class BodyModel(torch.nn.Module):
    """Abstract body model: ``(global_orient, body_pose, betas, transl) -> BodyOutput``.

    Subclasses set :attr:`joint_names` (root first, length J+1),
    :attr:`keypoint_convention`, :attr:`num_betas`, :attr:`name` and implement
    :meth:`forward` and :meth:`faces`.
    """

    name: str = "body"
    #: ``neutral``, ``male`` or ``female`` (the SMPL family's files; anny's is neutral).
    gender: str = "neutral"
    joint_names: tuple[str, ...] = ()
    keypoint_convention: KeypointConvention
    num_betas: int = 0
    #: Whether :meth:`canonical` takes ``betas`` of ``B / G`` rows for ``G`` consecutive poses
    #: each (and computes each shape's rest skeleton once); otherwise :meth:`forward` repeats them.
    groups_shapes: bool = False

    @property
    def num_body_joints(self) -> int:
        """J, the number of rotations in ``body_pose``."""
        return len(self.joint_names) - 1

    @property
    def device(self) -> torch.device:
        """Where the model's tensors live (its first buffer's device; CPU without buffers)."""
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's tensors (float32 without floating buffers): what
        fitters cast their batches to."""
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.float32

    def keypoint_weights(self) -> torch.Tensor:
        """``(K,)`` weight of each model keypoint in the fitters' reprojection terms (the
        camera stage's torso fit excepted): 1 where the model's point is the annotated
        anatomy, 0 where it is a different point (SMPL's hip joints vs. COCO's hips)."""
        return torch.ones(len(self.keypoint_convention), device=self.device)

    def faces(self) -> torch.Tensor:
        """``(F, 3)`` int64 triangle indices into ``vertices``."""
        raise NotImplementedError

    def canonical(self, body_pose: torch.Tensor, betas: torch.Tensor, return_vertices: bool = False) -> BodyOutput:
        """The posed body in the canonical frame (``global_orient = 0``, ``transl = 0``).

        Args:
            body_pose: ``(B, J, 3)`` axis-angle.
            betas: ``(B, S)``; a model with :attr:`groups_shapes` also takes ``(B / G, S)``,
                one shape per ``G`` consecutive poses (what :meth:`forward` passes for its
                ``rows_per_shape``).
            return_vertices: compute the full mesh (slower); fitting only needs
                keypoints and joints.
        """
        raise NotImplementedError

    def place(self, body: BodyOutput, global_orient: torch.Tensor, transl: torch.Tensor) -> BodyOutput:
        """Rotate a canonical body by ``global_orient`` about its root joint, then add ``transl``.

        This is SMPL's rule, ``x -> R (x - j0) + j0 + transl``; for a model whose
        canonical root sits at the origin (anny), ``transl`` is the root position.
        Fitters call :meth:`canonical` once and :meth:`place` per iteration when
        neither ``body_pose`` nor ``betas`` move.
        """
        R = roma.rotvec_to_rotmat(global_orient)
        Rt = R.transpose(-1, -2)
        pivot = body.joints_3d[:, :1, :]
        shift = pivot + transl[:, None, :]

        def move(x, product=small_matmul):  # (the mesh's 13,718 rows: a plain product, no (B, N, 3, 3) temporary)
            return None if x is None else product(x - pivot, Rt) + shift

        return BodyOutput(move(body.vertices, torch.matmul), move(body.joints_3d), move(body.keypoints_3d))

    def forward(
        self,
        global_orient: torch.Tensor,
        body_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor,
        return_vertices: bool = False,
        rows_per_shape: int = 1,
    ) -> BodyOutput:
        """Pose, shape and place the body in the camera frame.

        Args:
            global_orient: ``(B, 3)`` axis-angle.
            body_pose: ``(B, J, 3)`` axis-angle.
            betas: ``(B, S)``, or ``(B / rows_per_shape, S)``.
            transl: ``(B, 3)`` metres.
            return_vertices: also compute the full mesh.
            rows_per_shape: ``G``: ``betas`` is ``(B / G, S)``, the shape of ``G`` consecutive
                rows each (a fitter's hypotheses of one person); the same result as repeating
                each shape ``G`` times, with each rest skeleton computed once where the model
                can (:attr:`groups_shapes`).
        Returns:
            :class:`BodyOutput` in the OpenCV camera frame, metres.
        Parameters in another floating dtype than the model's (float64 from numpy) are cast to it.

        Raises:
            TypeError: a parameter that is not a tensor (a numpy array, None, a list).
            ValueError: a parameter of another shape (``J`` = :attr:`num_body_joints`, ``S`` =
                :attr:`num_betas`; another model's ``body_pose`` was read as its first joints), or
                ``B`` = 0, or ``rows_per_shape`` does not divide ``B``.
        """
        self.check_params(global_orient, body_pose, betas, transl, rows_per_shape)
        if any(t.dtype != self.dtype for t in (global_orient, body_pose, betas, transl)):
            global_orient, body_pose, betas, transl = (t.to(self.dtype) for t in (global_orient, body_pose, betas,
                                                                                  transl))
        if rows_per_shape > 1 and not self.groups_shapes:
            betas = betas.repeat_interleave(rows_per_shape, 0)
        return self.place(self.canonical(body_pose, betas, return_vertices), global_orient, transl)

    def check_params(self, global_orient, body_pose, betas, transl, rows_per_shape: int = 1) -> None:
        """Refuse parameters that are not ``(B, 3)``, ``(B, J, 3)``, ``(B / G, S)``, ``(B, 3)`` for
        one ``B`` (``G = rows_per_shape``).

        Raises:
            TypeError: a parameter that is not a floating tensor (naming it and how to make one).
            ValueError: naming the parameter, its shape and the one this model takes; or no people
                (``B`` = 0); or ``rows_per_shape`` is not a positive divisor of ``B``.
        """
        params = dict(global_orient=global_orient, body_pose=body_pose, betas=betas, transl=transl)
        for name, value in params.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                kind = f"a {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
                raise TypeError(f"{self.name}: {name} is {kind}: give floating torch tensors, e.g. "
                                f"torch.as_tensor({name}, dtype=model.dtype, device=model.device)")
        if global_orient.ndim == 1:
            raise ValueError(f"{self.name}: global_orient has shape {tuple(global_orient.shape)}: parameters are "
                             "batched, (B, 3) for B people (one person: global_orient[None], body_pose[None], ...)")
        B = global_orient.shape[0] if global_orient.ndim else None
        if B == 0:
            raise ValueError(f"{self.name}: a batch of 0 people (global_orient {tuple(global_orient.shape)}): "
                             "nothing to pose")
        try:  # (any integer: numpy's too)
            G = operator.index(rows_per_shape)
        except TypeError:
            raise ValueError(f"{self.name}: rows_per_shape = {rows_per_shape!r}: an integer, the number of "
                             "consecutive rows each shape serves") from None
        if G < 1 or (B is not None and B % G):
            raise ValueError(f"{self.name}: rows_per_shape = {G!r} for {B} rows: a positive divisor of the "
                             "number of rows (each shape serves that many consecutive rows)")
        want = dict(global_orient=(B, 3), body_pose=(B, self.num_body_joints, 3),
                    betas=(None if B is None else B // G, self.num_betas), transl=(B, 3))
        for name, value in params.items():
            if tuple(value.shape) != want[name]:
                rows = "B / rows_per_shape" if name == "betas" and G > 1 else "B"
                raise ValueError(f"{self.name}: {name} has shape {tuple(value.shape)}, this model takes "
                                 f"{(rows,) + want[name][1:]} with one B for every parameter "
                                 f"(B = {B} from global_orient)")

    def neutral_params(self, batch_size: int, device=None) -> dict[str, torch.Tensor]:
        """Zero pose, mean shape, zero translation for ``batch_size`` people."""
        device = device or self.device
        z = lambda *s: torch.zeros(*s, device=device, dtype=self.dtype)  # noqa: E731
        return dict(
            global_orient=z(batch_size, 3),
            body_pose=z(batch_size, self.num_body_joints, 3),
            betas=z(batch_size, self.num_betas),
            transl=z(batch_size, 3),
        )

    def hinge_axes(self) -> dict[str, torch.Tensor]:
        """Per joint name, the unit axis (in the joint's ``body_pose`` frame) about
        which a positive rotation is natural flexion: elbows and knees. Used by
        the bend prior. Empty when unknown."""
        return {}
