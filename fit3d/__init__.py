"""fit3d: 3D human body pseudo-ground-truth from 2D keypoints by per-sample optimisation.

Data flow: :mod:`fit3d.data.readers` -> :mod:`fit3d.data.batching` ->
:mod:`fit3d.fitters` -> :mod:`fit3d.data.writers`, driven by :mod:`fit3d.pipeline`.
"""

__version__ = "0.1.0"
