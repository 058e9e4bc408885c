"""Fitters: ``fitter(batch: PersonBatch) -> FitResult``."""

from fit3d.fitters.eft import EFT
from fit3d.fitters.neuralannot import NeuralAnnot
from fit3d.fitters.result import FitResult
from fit3d.fitters.smplify import SMPLify
from fit3d.fitters.stages import Stage, default_smplify_schedule, load_schedule

__all__ = ["EFT", "NeuralAnnot", "FitResult", "SMPLify", "Stage", "default_smplify_schedule", "load_schedule"]
