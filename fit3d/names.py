"""The names the package and its command line share, in a module that imports nothing (so
``fit3d --help`` builds its choices without importing torch): body models, their genders, pose
priors and the kinds of prior training makes. Each package re-exports its own
(``fit3d.body_models.MODELS``, ``fit3d.priors.PRIORS``, ``fit3d.training.priors.PRIOR_KINDS``)."""

#: Body models by name (:func:`fit3d.body_models.build_body_model`).
MODELS = ("anny", "smpl", "smplh", "smplx")
#: The licensed models loaded through smplx (gendered, set up once with ``fit3d setup-model``).
SMPL_FAMILY = ("smpl", "smplh", "smplx")
#: The SMPL family's genders (one model file each).
GENDERS = ("neutral", "male", "female")
#: Pose priors by name (:func:`fit3d.priors.build_prior`).
PRIORS = ("l2", "gmm", "vae", "articulation")
#: What ``fit3d train-prior --kind`` trains (:func:`fit3d.training.priors.train_prior`).
PRIOR_KINDS = ("gmm", "vae", "articulation", "prototypes")
