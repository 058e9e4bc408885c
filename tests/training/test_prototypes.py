"""The prototype memory's clustering (fit3d.training.prototypes)."""

import numpy as np


def test_the_clustering_runs_on_one_thread_whatever_the_callers_count(anny_model, monkeypatch):
    """k-means' sums in another order (2 threads) moved a prototype and the counts of the shipped
    memory, which was made on one thread (found by a reproduction trial): the clustering now runs
    on one thread, so ``fit3d train-prior --kind prototypes`` gives one result on any machine."""
    import sklearn.cluster
    from threadpoolctl import threadpool_info, threadpool_limits

    from fit3d.training.prototypes import learn_prototypes

    seen = []
    real_fit = sklearn.cluster.KMeans.fit

    def fit(self, *a, **kw):
        seen.append(max(info["num_threads"] for info in threadpool_info()))
        return real_fit(self, *a, **kw)

    monkeypatch.setattr(sklearn.cluster.KMeans, "fit", fit)
    poses = np.random.default_rng(0).normal(0, 0.2, (200, anny_model.num_body_joints, 3)).astype(np.float32)
    with threadpool_limits(limits=2):
        memory = learn_prototypes(anny_model, poses, k=8)
    assert seen == [1]
    assert memory.prototypes.shape == (8, anny_model.num_body_joints, 3) and int(memory.counts.sum()) == 200
