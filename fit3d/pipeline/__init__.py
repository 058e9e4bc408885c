"""The batch job (:mod:`fit3d.pipeline.runner`), the images it fits (:mod:`~fit3d.pipeline.selection`) and the
people (:mod:`~fit3d.pipeline.skips`), what it writes (:mod:`~fit3d.pipeline.records`),
its counts and exit codes (:mod:`~fit3d.pipeline.summary`) and NeuralAnnot as a job
(:mod:`~fit3d.pipeline.neuralannot`)."""

from fit3d.pipeline.neuralannot import neuralannot_target, run_neuralannot
from fit3d.pipeline.runner import RunConfig, run
from fit3d.pipeline.selection import parse_shard, select_images
from fit3d.pipeline.skips import MIN_VISIBLE_KEYPOINTS, usable_keypoints
from fit3d.pipeline.summary import EXIT_CODES, versions

__all__ = ["EXIT_CODES", "MIN_VISIBLE_KEYPOINTS", "RunConfig", "neuralannot_target", "parse_shard", "run",
           "run_neuralannot", "select_images", "usable_keypoints", "versions"]
