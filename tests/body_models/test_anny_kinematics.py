"""fit3d's pose-only forward kinematics against anny's own (anny.utils.kinematics)."""

import torch


def _anny_reference(m, body_pose, betas):
    """Joints and keypoints (canonical frame) through anny's forward kinematics and dense anchors."""
    coeffs = m.blendshape_coefficients(m.phenotype(betas))
    rest = m.skeleton.get_rest_model(coeffs)["rest_bone_poses"]
    transforms, poses = m.skeleton.get_bone_transforms(m._deltas(body_pose), rest)
    pairs = m.anchor_rest + (coeffs @ m.anchor_blend).view(-1, *m.anchor_rest.shape)
    dense = pairs.new_zeros(len(betas), len(m.keypoint_convention), m.num_bones, 4)
    dense[:, m.pair_keypoint, m.pair_bone] = pairs
    kp = torch.einsum("bnij,bknj->bki", transforms[:, :, :3, :], dense)
    C = m.to_canonical.T
    return poses[:, m.joint_bones, :3, 3] @ C, kp @ C


def test_matches_anny_forward_kinematics(anny_model):
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(6, anny_model.num_body_joints, 3, generator=g) * 0.8
    betas = torch.randn(6, anny_model.num_betas, generator=g)
    out = anny_model.canonical(pose, betas)
    joints, kp = _anny_reference(anny_model, pose, betas)
    assert torch.allclose(out.joints_3d, joints, atol=1e-5)
    assert torch.allclose(out.keypoints_3d, kp, atol=1e-5)


def test_gradients_match_anny(anny_model):
    """Pose and shape gradients of a loss on joints and keypoints equal those through anny."""
    g = torch.Generator().manual_seed(1)
    pose0 = torch.randn(3, anny_model.num_body_joints, 3, generator=g) * 0.5
    betas0 = torch.randn(3, anny_model.num_betas, generator=g)
    w = torch.randn(3, len(anny_model.keypoint_convention), 3, generator=g)
    grads = []
    for ours in (True, False):
        pose, betas = pose0.clone().requires_grad_(), betas0.clone().requires_grad_()
        if ours:
            out = anny_model.canonical(pose, betas)
            joints, kp = out.joints_3d, out.keypoints_3d
        else:
            joints, kp = _anny_reference(anny_model, pose, betas)
        ((kp * w).sum() + joints.square().sum()).backward()
        grads.append((pose.grad, betas.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-4)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-4)


def test_one_pose_or_one_shape_broadcasts(anny_model):
    """A batch of 1 on either side (one pose for many shapes, one shape for many poses)."""
    g = torch.Generator().manual_seed(2)
    pose = torch.randn(3, anny_model.num_body_joints, 3, generator=g) * 0.5
    betas = torch.randn(3, anny_model.num_betas, generator=g)
    with torch.no_grad():
        full = anny_model.canonical(pose[:1].expand(3, -1, -1), betas).keypoints_3d
        assert torch.allclose(anny_model.canonical(pose[:1], betas).keypoints_3d, full, atol=1e-6)
        full = anny_model.canonical(pose, betas[:1].expand(3, -1)).keypoints_3d
        assert torch.allclose(anny_model.canonical(pose, betas[:1]).keypoints_3d, full, atol=1e-6)
