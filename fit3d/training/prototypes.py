"""Learning the prototype memory (:class:`fit3d.priors.prototypes.PoseMemory`).

Following PM-Net's aim that rare regions of the pose distribution get prototypes of
their own, the training poses are clustered with scikit-learn's k-means on their
skeletons (mean-shape joints, root-relative, canonical frame), each pose weighted by
its distance to its ``knn``-th nearest neighbour raised to ``density_power``: poses in
sparse regions weigh more, so clusters do not all go to the walking poses that fill
the mocap. Each prototype is the medoid of its cluster (a real captured or
recombined pose, never an average of rotations).
"""

from __future__ import annotations

import numpy as np
import torch

from fit3d.priors.prototypes import PoseMemory

#: Prototypes in the shipped memory.
NUM_PROTOTYPES = 32


def skeleton_features(body_model, body_pose: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``(N, 3 (J+1))`` flattened mean-shape joints, root-relative, canonical frame (metres)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(body_pose), batch_size):
            bp = torch.as_tensor(body_pose[s : s + batch_size], dtype=torch.float32, device=body_model.device)
            c = body_model.canonical(bp, torch.zeros(len(bp), body_model.num_betas, device=bp.device))
            out.append((c.joints_3d - c.joints_3d[:, :1]).flatten(1).cpu().numpy())
    return np.concatenate(out)


def learn_prototypes(body_model, body_pose: np.ndarray, k: int = NUM_PROTOTYPES, seed: int = 0,
                     density_power: float = 1.0, knn: int = 10) -> PoseMemory:
    """Cluster ``(N, J, 3)`` training poses into ``k`` prototypes (see module docstring).

    The clustering runs on one thread whatever the machine's count: k-means' sums in another
    order (another thread count) moved a prototype and the cluster counts of the shipped memory,
    which was made on one thread.

    Raises:
        ValueError: fewer poses than prototypes.
    """
    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    if len(body_pose) < k:
        raise ValueError(f"{len(body_pose)} poses cannot make {k} prototypes")
    X = skeleton_features(body_model, body_pose)
    with threadpool_limits(limits=1):
        nn = NearestNeighbors(n_neighbors=min(knn, len(X) - 1) + 1).fit(X)
        dist, _ = nn.kneighbors(X)
        w = (dist[:, -1] + 1e-6) ** density_power
        km = KMeans(k, n_init=4, random_state=seed).fit(X, sample_weight=w / w.mean())
    medoids = []
    for c in range(k):
        members = np.nonzero(km.labels_ == c)[0]
        medoids.append(members[np.argmin(((X[members] - km.cluster_centers_[c]) ** 2).sum(1))])
    counts = np.bincount(km.labels_, minlength=k)
    return PoseMemory(torch.as_tensor(body_pose[np.asarray(medoids)]), torch.as_tensor(counts))
