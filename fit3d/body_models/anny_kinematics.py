"""Forward kinematics of anny's skeleton for fitting: keypoints and joints, no mesh.

anny's own forward kinematics (``anny.utils.kinematics.forward_kinematic``) is
general (every pose parameterisation, any delta transform) and writes its 4x4
products as broadcast multiply-and-sum. Fitting calls it thousands of times on
the same skeleton with pose-only changes, so this module computes the same
result for the one case fit3d uses (``local-ref`` deltas that are pure rotations,
identity root, cached reference orientations) with what can be computed once
split off:

* per model: the reference orientations ``U`` and the rotation ``U_p^T U_c`` of
  every bone that fit3d does not articulate;
* per shape (:meth:`AnnyKinematics.shape_terms`): each bone's rest offset in its
  parent's frame and the keypoint anchors moved into each bone's rest frame, for
  the (keypoint, bone) pairs that carry weight only (151 of 23 x 36);
* per pose (:meth:`AnnyKinematics.forward`): 19 rotations, one chain of 3x4
  products by depth level that starts from the rotation into the canonical frame
  (so the outputs need no rotation of their own), and one batched product with the
  anchor matrix (zero where a pair carries no weight) for all keypoints.

Notation as anny's ``forward_kinematic``: a bone ``c`` of parent ``p`` has rest
pose ``[R_c | h_c]``, reference orientation ``U_c`` and posed pose
``W_c = W_p K_c`` with ``K_c = [U_p^T D_c U_c | U_p^T (q_c - q_p)]``, where
``D_c`` is the delta rotation and ``q_c - q_p = A_p (h_c - h_p)``,
``A_p = U_p R_p^T`` (``A_0 = I``). Skinning transforms are
``T_c = W_c [R_c | h_c]^-1``; a keypoint is ``sum_c T_c a_kc`` for homogeneous
anchors ``a_kc`` (see ``AnnyModel._init_keypoint_anchors``), i.e.
``sum_c V_c R_c^T (a_kc - h_c a_kc^w) + w_c a_kc^w`` for ``W_c = [V_c | w_c]``.
Equality with anny's forward kinematics is tested.
"""

from __future__ import annotations

import roma
import torch

from fit3d.geometry import small_matmul


def poses_per_shape(shapes: int, poses: int) -> int:
    """``G``, the consecutive poses each of ``shapes`` shapes serves among ``poses``.

    Raises:
        ValueError: ``shapes`` does not divide ``poses``.
    """
    if poses % shapes:
        raise ValueError(f"{shapes} shapes for {poses} poses: each shape must serve the same number of consecutive "
                         "poses")
    return poses // shapes


class AnnyKinematics(torch.nn.Module):
    """Pose-only forward kinematics of an anny skeleton (see module docstring).

    Bones are processed level by level (depth in the tree, root alone first); within a
    level the articulated bones come first, so each level's transforms are one
    concatenation of a slice of the articulated and a slice of the resting bones.

    Args:
        skeleton: an ``anny`` rigged model (``local-ref`` parameterisation, cached bone
            orientations) whose ``kinematic_chain_levels`` / ``kinematic_chain_indices``
            and ``reference_bone_orientations`` ``(NB, 3, 3)`` are read.
        articulated: ``(J,)`` bone indices that ``body_pose`` rotates, in ``body_pose`` order.
        to_canonical: ``(3, 3)`` rotation from anny's frame to the frame in which
            ``body_pose`` axes are expressed.
        pair_keypoint, pair_bone: ``(P,)`` the keypoint and the bone of each anchor pair
            (see :meth:`shape_terms`); keypoints are numbered ``0..K-1``.
        num_keypoints: K.
    Raises:
        ValueError: the skeleton is not in the ``local-ref`` parameterisation, has no cached
            reference orientations, its chain does not start with the root alone, or the
            root is articulated.
    """

    def __init__(self, skeleton, articulated: torch.Tensor, to_canonical: torch.Tensor, pair_keypoint: torch.Tensor,
                 pair_bone: torch.Tensor, num_keypoints: int) -> None:
        super().__init__()
        if getattr(skeleton, "pose_parameterization", None) != "local-ref":
            raise ValueError("AnnyKinematics needs anny's 'local-ref' pose parameterisation")
        if getattr(skeleton, "reference_bone_orientations", None) is None:
            raise ValueError("AnnyKinematics needs anny's cached reference bone orientations "
                             "(bone_orientation='cached')")
        _, order, _, parent = (t.long() for t in skeleton.kinematic_chain_indices)
        levels = [tuple(map(int, lv)) for lv in skeleton.kinematic_chain_levels]
        articulated = [int(b) for b in articulated]
        if levels[0] != (0, 1) or int(order[0]) != 0 or 0 in articulated:
            raise ValueError("the kinematic chain must start with the root alone, and the root is not articulated")
        # Chain order: level by level, articulated bones first within a level.
        chain, self.level_sizes = [[0]], []
        for first, last in levels[1:]:
            bones = [int(b) for b in order[first:last]]
            art = [b for b in bones if b in articulated]
            chain.append(art + [b for b in bones if b not in articulated])
            self.level_sizes.append((len(art), len(bones) - len(art)))
        flat = [b for level in chain for b in level]
        position = torch.empty(len(flat), dtype=torch.long)
        position[flat] = torch.arange(len(flat))
        starts = [0]
        for level in chain:
            starts.append(starts[-1] + len(level))
        for i, level in enumerate(chain[1:]):  # parents as indices into the previous level
            self.register_buffer(f"parent_in_level_{i}", position[parent[level]] - starts[i], persistent=False)
        art_chain = [b for level in chain[1:] for b in level if b in articulated]
        rest_chain = [b for level in chain[1:] for b in level if b not in articulated]
        U = skeleton.reference_bone_orientations.float()
        up_t = U[parent].transpose(-1, -2)
        C = to_canonical.float()
        # K_c = U_p^T D_c U_c with D_c = C^T R(w) C for body_pose axis-angle w (canonical axes);
        # with Q = C U_c: K_c = (U_p^T U_c) (Q^T R(w) Q) = (U_p^T U_c) R(det(Q) Q^T w).
        Q = C @ U[art_chain]
        self.register_buffer("axis_map", Q * torch.linalg.det(Q)[:, None, None], persistent=False)
        self.register_buffer("art_left", up_t[art_chain] @ U[art_chain], persistent=False)
        self.register_buffer("rest_rotation", up_t[rest_chain] @ U[rest_chain], persistent=False)
        self.register_buffer("pose_order", torch.tensor([articulated.index(b) for b in art_chain]), persistent=False)
        # The chain starts from C instead of I: every posed transform, and so every joint and
        # keypoint, comes out in the canonical frame (no product with C^T per output).
        self.register_buffer("root_rotation", C, persistent=False)
        self.register_buffer("art_bones", torch.tensor(art_chain), persistent=False)
        self.register_buffer("rest_bones", torch.tensor(rest_chain), persistent=False)
        self.register_buffer("parent", parent, persistent=False)
        self.register_buffer("position", position, persistent=False)  # bone -> index in chain order
        self.register_buffer("ref", U, persistent=False)
        self.register_buffer("ref_parent_t", up_t, persistent=False)
        onehot = torch.zeros(len(pair_bone), len(flat))
        onehot[torch.arange(len(pair_bone)), pair_bone.long()] = 1.0
        self.register_buffer("pair_onehot", onehot, persistent=False)  # (P, NB)
        # Where each pair's (x, y, z, w) lands in the flattened (4 NB, K) anchor matrix: row
        # 3 c + i for coordinate i of the bone in chain position c, row 3 NB + c for its weight.
        nb, slot, k = len(flat), position[pair_bone.long()], pair_keypoint.long()
        rows = torch.cat([3 * slot[:, None] + torch.arange(3), 3 * nb + slot[:, None]], 1)  # (P, 4)
        self.register_buffer("pair_index", (rows * num_keypoints + k[:, None]).reshape(-1), persistent=False)
        self.num_keypoints = num_keypoints

    def shape_terms(self, R: torch.Tensor, h: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What depends on the shape only.

        Args:
            R: ``(B, NB, 3, 3)`` anny's rest bone orientations. h: ``(B, NB, 3)`` its rest bone heads
                (the rest poses ``[R | h]``).
            anchors: ``(B, P, 4)`` homogeneous anchor ``a_kc`` of each (keypoint, bone) pair.
        Returns:
            ``(articulated offsets (B, J, 3), resting transforms (B, NB-J-1, 3, 4),
            anchor matrix (B, 4 NB, K))``: the translation ``U_p^T (q_c - q_p)`` of each
            articulated bone, the whole ``K_c`` of every other non-root bone (chain order),
            and each pair's anchor in its bone's rest frame ``[R_c^T (a - h_c a^w), a^w]``
            laid out for :meth:`forward`'s keypoint product (zero for pairs without weight).
        """
        B, nb = R.shape[:2]
        p = self.parent
        A = self.ref @ R.transpose(-1, -2)
        A = torch.cat([torch.eye(3, dtype=A.dtype, device=A.device).expand_as(A[:, :1]), A[:, 1:]], 1)
        q = (A.index_select(1, p) @ (h - h.index_select(1, p))[..., None]).squeeze(-1)
        offsets = (self.ref_parent_t @ q[..., None]).squeeze(-1)
        rest_offsets = offsets.index_select(1, self.rest_bones)
        resting = torch.cat([self.rest_rotation.expand(B, -1, -1, -1), rest_offsets[..., None]], -1)
        # Each pair's R and h through a one-hot product: its backward is a product too, where
        # index_select's would add 151 rows into 36 (slow on CPU).
        Rh = self.pair_onehot @ torch.cat([R.reshape(B, nb, 9), h], -1)
        w = anchors[..., 3:]
        local = Rh[..., :9].view(B, -1, 3, 3).transpose(-1, -2) @ (anchors[..., :3] - Rh[..., 9:] * w)[..., None]
        pairs = torch.cat([local.squeeze(-1), w], -1).reshape(B, -1)  # (B, 4 P)
        K = self.num_keypoints
        # straight into the (4 NB, K) layout: one copy, and a gather for its backward
        matrix = pairs.new_zeros(B, 4 * nb * K).index_copy_(1, self.pair_index, pairs).view(B, 4 * nb, K)
        return offsets.index_select(1, self.art_bones), resting, matrix

    def forward(self, body_pose: torch.Tensor, terms: tuple[torch.Tensor, ...],
                joint_bones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed joints and keypoints in the canonical frame (``to_canonical`` applied), root head at
        the origin.

        Args:
            body_pose: ``(B, J, 3)`` axis-angle in canonical axes.
            terms: :meth:`shape_terms` of ``U`` shapes, each the shape of ``G = B / U``
                consecutive poses (``U = B``: one shape per pose; ``U = 1``: one shape for all);
                a single pose (``B = 1``) is broadcast to the ``U`` shapes. The keypoint product
                reads each shape's anchor matrix once for its ``G`` poses.
            joint_bones: ``(J',)`` bone indices whose posed heads are returned.
        Returns:
            ``(joints (B, J', 3), keypoints (B, K, 3))`` metres, canonical frame.
        Raises:
            ValueError: ``U`` does not divide the number of poses.
        """
        U = terms[0].shape[0]
        B = max(body_pose.shape[0], U)
        G = poses_per_shape(U, B)
        body_pose = body_pose.expand(B, *body_pose.shape[1:])
        art_offsets, resting, matrix = terms
        if G > 1:  # (small tensors: the anchor matrix, the large one, is not repeated)
            art_offsets, resting = (t[:, None].expand(U, G, *t.shape[1:]).reshape(B, *t.shape[1:]) for t in terms[:2])
        axis = small_matmul(body_pose.index_select(1, self.pose_order)[..., None, :], self.axis_map).squeeze(-2)
        rot = small_matmul(self.art_left, roma.rotvec_to_rotmat(axis))  # (B, J, 3, 3) chain order
        moving = torch.cat([rot, art_offsets[..., None]], -1).split([a for a, _ in self.level_sizes], 1)
        still = resting.split([r for _, r in self.level_sizes], 1)
        V = [self.root_rotation.to(rot.dtype).expand(B, 1, 3, 3)]
        w = [art_offsets.new_zeros(B, 1, 3)]
        for i, (m, r) in enumerate(zip(moving, still)):
            par = getattr(self, f"parent_in_level_{i}")
            Vw = small_matmul(V[-1].index_select(1, par), torch.cat([m, r], 1))  # [V_p K_c | V_p t_c]
            V.append(Vw[..., :3])
            w.append(Vw[..., 3] + w[-1].index_select(1, par))
        V, w = torch.cat(V, 1), torch.cat(w, 1)
        Xt = torch.cat([V.permute(0, 2, 1, 3).reshape(B, 3, -1), w.transpose(1, 2)], -1)  # (B, 3, 4 NB)
        keypoints = (Xt.reshape(U, 3 * G, -1) @ matrix).view(B, 3, -1).transpose(1, 2)
        return w.index_select(1, self.position[joint_bones]), keypoints
