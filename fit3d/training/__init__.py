"""Training the learned parts: synthetic people from mocap (:mod:`~fit3d.training.synthetic`),
pose priors (:mod:`~fit3d.training.priors`) and the keypoint regressor
(:mod:`~fit3d.training.regressor`). Submodules are imported on demand (no
imports here), so :mod:`fit3d.priors` and :mod:`fit3d.regressors` stay free of
training code at import time."""
