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


def _forward_and_grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    n = 4
    params = dict(global_orient=torch.randn(n, 3, generator=g), body_pose=torch.randn(n, model.num_body_joints, 3,
                  generator=g) * 0.5, betas=torch.randn(n, model.num_betas, generator=g) * 0.5,
                  transl=torch.tensor([0.1, -0.2, 3.0]).repeat(n, 1))
    params = {k: v.requires_grad_() for k, v in params.items()}
    out = model(**params)
    w = torch.randn(out.keypoints_3d.shape, generator=g)
    ((out.keypoints_3d * w).sum() + out.joints_3d.square().sum()).backward()
    return out.joints_3d.detach(), out.keypoints_3d.detach(), [p.grad for p in params.values()]


def check_cuda_products_on_cpu(model, monkeypatch, modules, seed=3):
    """The products a GPU takes (``small_matmul`` as ``broadcast_matmul``) give the CPU's joints,
    keypoints and gradients."""
    from fit3d.geometry import broadcast_matmul

    want = _forward_and_grads(model, seed)
    for module in modules:
        monkeypatch.setattr(module, "small_matmul", broadcast_matmul)
    got = _forward_and_grads(model, seed)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_the_gpus_products_give_the_same_body(anny_model, monkeypatch):
    import fit3d.body_models.anny_kinematics as kin
    import fit3d.body_models.base as base

    anny_model._rest_cache = None  # (shapes with gradients are not cached, but be sure)
    check_cuda_products_on_cpu(anny_model, monkeypatch, (kin, base))
