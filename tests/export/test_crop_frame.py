import numpy as np
import pytest
import roma
import torch

from fit3d.export.crop_frame import crop_rotation, to_crop_frame


def test_the_crop_rotation_turns_the_ray_through_the_crop_centre_onto_the_optical_axis():
    f = np.array([[1000.0, 1000.0], [800.0, 820.0], [500.0, 500.0]])
    pp = np.array([[320.0, 240.0], [500.0, 400.0], [100.0, 50.0]])
    center = np.array([[320.0, 240.0], [1100.0, -200.0], [40.0, 700.0]])
    R = crop_rotation(center, f, pp)
    assert R.shape == (3, 3, 3)
    np.testing.assert_allclose(R[0], np.eye(3), atol=1e-12)  # a crop on the principal point: no turn
    ray = np.concatenate([(center - pp) / f, np.ones((3, 1))], 1)
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, ray), [[0, 0, 1]] * 3, atol=1e-12)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    # the smallest such rotation: about an axis in the image plane (no roll about the ray)
    rotvec = roma.rotmat_to_rotvec(torch.from_numpy(R)).numpy()
    np.testing.assert_allclose(rotvec[:, 2], 0.0, atol=1e-12)
    angle = np.degrees(np.linalg.norm(rotvec, axis=1))
    np.testing.assert_allclose(angle[1], np.degrees(np.arccos(ray[1, 2])), rtol=1e-9)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        crop_rotation(center[:, :1], f, pp)
    with pytest.raises(ValueError, match="finite"):
        crop_rotation(center, -f, pp)


def test_bodies_move_rigidly_into_the_crop_frame(anny_model):
    model = anny_model
    g = torch.Generator().manual_seed(0)
    B = 4
    params = dict(global_orient=torch.randn(B, 3, generator=g), body_pose=0.3 * torch.randn(B, model.num_body_joints, 3,
                                                                                           generator=g),
                  betas=0.5 * torch.randn(B, model.num_betas, generator=g),
                  transl=torch.tensor([[1.5, -0.8, 4.0], [-2.0, 1.0, 6.0], [0.0, 0.0, 3.0], [0.7, 1.2, 2.5]]))
    with torch.no_grad():
        full = model(**params)
    f, pp = np.full((B, 2), 900.0), np.tile([640.0, 360.0], (B, 1))
    root_px = f * full.joints_3d[:, 0, :2].numpy() / full.joints_3d[:, 0, 2:].numpy() + pp
    people = {k: v.numpy() for k, v in params.items()}
    people.update(joints_3d=full.joints_3d.numpy(), keypoints_3d=full.keypoints_3d.numpy(), focal_length=f,
                  principal_point=pp, bbox=np.concatenate([root_px - 100, np.full((B, 2), 200.0)], 1))
    crop = to_crop_frame(people)
    R = crop["crop_rotation"].astype(np.float64)
    with torch.no_grad():
        moved = model(**{k: torch.as_tensor(crop[k], dtype=torch.float32) for k in params})
    want = np.einsum("nij,npj->npi", R, full.joints_3d.numpy())
    np.testing.assert_allclose(moved.joints_3d.numpy(), want, atol=2e-5)
    np.testing.assert_allclose(crop["joints_3d"], want, atol=2e-5)
    np.testing.assert_allclose(crop["keypoints_3d"], np.einsum("nij,npj->npi", R, full.keypoints_3d.numpy()), atol=2e-5)
    np.testing.assert_array_equal(crop["body_pose"], people["body_pose"])
    # the box is centred on the root here, so in the crop frame the root lies on the optical axis
    np.testing.assert_allclose(moved.joints_3d[:, 0, :2].numpy(), 0.0, atol=2e-5)
    moved_by = np.linalg.norm(want - full.joints_3d.numpy(), axis=-1).max(1)
    assert (moved_by[[0, 1, 3]] > 0.1).all() and moved_by[2] < 1e-5  # the third person is on the optical axis
