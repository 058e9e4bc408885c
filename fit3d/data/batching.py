"""From :class:`~fit3d.data.records.Person` records to batched tensors.

The camera is a full-frame pinhole (as in CLIFF, Li et al. ECCV 2022, and
ScoreHMR): focal length ``sqrt(w^2 + h^2)`` pixels for a ``w x h`` image unless
the user or the input gives one (a dataset's intrinsics: :mod:`fit3d.data.intrinsics`),
principal point at the image centre unless given. Never the 5000-px crop camera of SPIN.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from fit3d.data.boxes import checked_bbox
from fit3d.data.conventions import KeypointConvention, convert
from fit3d.data.keypoints import sanitize_keypoints
from fit3d.data.records import Person
from fit3d.devices import check_device


def default_focal_length(width: float, height: float) -> float:
    """Full-frame focal length in pixels: the image diagonal ``sqrt(w^2 + h^2)``."""
    return math.sqrt(float(width) ** 2 + float(height) ** 2)


@dataclass
class PersonBatch:
    """B people as tensors, keypoints in the body model's convention.

    Attributes:
        keypoints_2d: ``(B, K, 3)`` pixels ``x, y`` and confidence in [0, 1];
            keypoints missing from the input have confidence 0.
        bbox: ``(B, 4)`` ``x, y, w, h`` pixels.
        focal_length: ``(B, 2)`` ``fx, fy`` pixels.
        principal_point: ``(B, 2)`` ``cx, cy`` pixels.
        image_size: ``(B, 2)`` ``width, height`` pixels.
        convention: the keypoint convention of ``keypoints_2d``.
    """

    keypoints_2d: torch.Tensor
    bbox: torch.Tensor
    focal_length: torch.Tensor
    principal_point: torch.Tensor
    image_size: torch.Tensor
    convention: KeypointConvention

    def __len__(self) -> int:
        return self.keypoints_2d.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "PersonBatch":
        """A copy with every tensor on ``device`` (and the floating ones in ``dtype`` when given)."""
        def moved(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype=dtype if t.is_floating_point() else None)

        return replace(self, **{f.name: moved(getattr(self, f.name)) for f in fields(self) if f.name != "convention"})

    def for_model(self, model) -> "PersonBatch":
        """This batch as a fitter of ``model`` needs it: on the model's ``device``, floating
        tensors in its ``dtype`` (a float64 batch is cast), keypoints in its ``keypoint_convention``.

        Raises:
            TypeError: a field that is not a tensor or an array of numbers.
            ValueError: the batch is empty, its keypoints are in another convention (build it
                with ``make_batch(people, model.keypoint_convention)``), or its tensors' shapes do
                not match it (``keypoints_2d`` not ``(B, K, 3)`` with K the convention's size, or
                the camera tensors not ``(B, 2)``, ``bbox`` not ``(B, 4)``), or a box, focal
                length or principal point is not finite, or a focal length is not > 0 or an image size < 0.

        Fields built by hand are taken as :func:`make_batch` gives them: numpy arrays become
        tensors, integer ones floating, tensors that carry a gradient (a 2D network's output)
        are detached (a fit does not backpropagate into its inputs), confidences are clipped
        to [0, 1] (COCO's visibility 2 is a label, not a weight), and keypoints with a
        non-finite coordinate or confidence are unlabelled (0, 0, 0).
        """
        given = replace(self, **{f.name: _as_float_tensor(f.name, getattr(self, f.name), model.dtype)
                                 for f in fields(self) if f.name != "convention"})
        if len(given) == 0:
            raise ValueError("an empty batch: nothing to fit (a fitter needs at least one person)")
        if given.convention != model.keypoint_convention:
            raise ValueError(f"batch keypoints are in {given.convention.name!r}, the model needs "
                             f"{model.keypoint_convention.name!r}: build the batch with make_batch(people, "
                             "model.keypoint_convention)")
        B, K = len(given), len(given.convention)
        want = dict(keypoints_2d=(B, K, 3), bbox=(B, 4), focal_length=(B, 2), principal_point=(B, 2), image_size=(B, 2))
        wrong = [f"{k} {tuple(getattr(given, k).shape)} (expected {v})" for k, v in want.items()
                 if tuple(getattr(given, k).shape) != v]
        if wrong:
            raise ValueError(f"a batch of {B} people in {given.convention.name!r} ({K} keypoints) with "
                             f"{', '.join(wrong)}: build it with make_batch(people, model.keypoint_convention)")
        batch = given.to(model.device, model.dtype)
        cameras = [k for k in ("bbox", "focal_length", "principal_point") if not torch.isfinite(getattr(batch, k)).all()]
        if cameras:
            rows = sorted({int(i) for k in cameras for i in torch.nonzero(~torch.isfinite(getattr(batch, k)))[:, 0]})
            raise ValueError(f"non-finite {', '.join(cameras)} for people {rows[:10]} of the batch: make_batch "
                             "rebuilds unusable boxes from the keypoints and gives the default camera")
        # (a negative focal length fitted a body upside down behind the camera, marked valid: a user's trial)
        bad = {"focal_length": ~(batch.focal_length > 0), "image_size": ~(batch.image_size >= 0)}  # (0: unknown)
        sizes = [k for k, b in bad.items() if b.any()]
        if sizes:
            rows = sorted({int(i) for k in sizes for i in torch.nonzero(bad[k])[:, 0]})
            raise ValueError(f"{' and '.join(sizes)} out of range (focal length > 0, image size >= 0) for people "
                             f"{rows[:10]} of the batch (pixels; make_batch gives the default camera: the image "
                             "diagonal)")
        kp = batch.keypoints_2d
        lost = ~torch.isfinite(kp).all(-1)  # NaN coordinates or confidence: unlabelled, as make_batch
        if lost.any():  # reads them (a NaN reached the fit and failed the whole batch in an SVD)
            kp = kp.masked_fill(lost[..., None], 0.0)
        if ((kp[..., 2] < 0) | (kp[..., 2] > 1)).any():
            kp = torch.cat([kp[..., :2], kp[..., 2:].clamp(0.0, 1.0)], -1)
        return replace(batch, keypoints_2d=kp)

    def index(self, idx: torch.Tensor | slice | list[int]) -> "PersonBatch":
        """The sub-batch of people ``idx``."""
        return replace(
            self,
            **{f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name != "convention"},
        )

    def repeat_interleave(self, n: int) -> "PersonBatch":
        """Each person repeated ``n`` times in a row (for orientation hypotheses)."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).repeat_interleave(n, dim=0)
                for f in fields(self)
                if f.name != "convention"
            },
        )


def _as_float_tensor(name: str, value, dtype: torch.dtype) -> torch.Tensor:
    """A :class:`PersonBatch` field as a floating tensor without gradient (``dtype`` for integer
    or boolean input; floating tensors keep theirs until moved).

    Raises:
        TypeError: ``value`` is not a tensor or array of numbers (naming the field)."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise TypeError(f"PersonBatch.{name} is a {type(value).__name__} that is not an array of numbers: give a "
                            "tensor (or build the batch with make_batch)") from e
    value = value.detach()
    return value if value.is_floating_point() else value.to(dtype)


def person_camera(person: Person, focal_length: float | None = None,
                  principal_point: tuple[float, float] | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((fx, fy), (cx, cy))`` pixels of a person's full-frame camera.

    Each part is the one given here, else the input's (``person.camera``: a dataset's
    intrinsics, :mod:`fit3d.data.intrinsics`), else the default: the image diagonal and centre.

    Raises:
        ValueError: a focal length (given, the input's, or the default of an image of size 0)
            that is not a finite number > 0, a non-finite principal point, or a negative or
            non-finite image size (the message names which; 0 x 0 is an image not opened, whose
            default focal length is refused): the fit would raise deep inside,
            or (negative) come out behind the camera and marked valid.
    """
    w, h = person.image_size
    known = person.camera
    if focal_length is not None:
        if not isinstance(focal_length, numbers.Real):  # ((fx, fy) gave a bare TypeError)
            raise ValueError(f"focal_length is one number of pixels (fx = fy), not {focal_length!r}")
        f = (float(focal_length), float(focal_length))
    else:
        f = tuple(map(float, known[0])) if known is not None else (default_focal_length(w, h),) * 2
    if principal_point is not None:
        pp = tuple(map(float, principal_point))
        if len(pp) != 2:  # (a wrong length went into the batch and failed at fit time)
            raise ValueError(f"principal_point is (cx, cy) pixels, not {principal_point!r}")
    else:
        pp = tuple(map(float, known[1])) if known is not None else (w / 2.0, h / 2.0)
    wrong = [what for what, bad in (
        ("the image size must be finite numbers >= 0 (0 x 0: unknown)",
         not all(math.isfinite(float(v)) and v >= 0 for v in (w, h))),
        ("the focal length must be a finite number > 0", not all(math.isfinite(v) and v > 0 for v in f)),
        ("the principal point must be finite", not all(map(math.isfinite, pp)))) if bad]
    if wrong:  # (a NaN principal point was reported as a bad focal length: a user's trial)
        raise ValueError(f"{person.image_key} (id {person.annot_id}): camera focal length {f} / principal point "
                         f"{pp} px (image {w}x{h}): {'; '.join(wrong)}")
    return f, pp


def batch_for(batch, model) -> PersonBatch:
    """What every fitter calls first: ``batch.for_model(model)`` (:meth:`PersonBatch.for_model`).

    Raises:
        TypeError: ``batch`` is no :class:`PersonBatch` (a list of people, an array): the
            message says to build one with :func:`make_batch`.
        ValueError: see :meth:`PersonBatch.for_model`.
    """
    if not isinstance(batch, PersonBatch):
        raise TypeError(f"fitters take a PersonBatch, not a {type(batch).__name__}: build one with "
                        "fit3d.data.batching.make_batch(people, model.keypoint_convention)")
    return batch.for_model(model)


def make_batch(
    people: list[Person],
    convention: KeypointConvention,
    focal_length: float | None = None,
    principal_point: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PersonBatch:
    """Stack people into a :class:`PersonBatch` in the model's convention.

    Args:
        people: the records; keypoints are mapped by name from each person's
            convention to ``convention``. An unusable box (missing, NaN, zero-area, outside
            the image, far larger than it, around none of the keypoints) is replaced by the
            labelled keypoints' box, as the readers do (:func:`fit3d.data.boxes.checked_bbox`;
            the readers' boxes pass unchanged).
        convention: the body model's keypoint convention.
        focal_length: pixels, for every person; default: the input's intrinsics
            (``Person.camera``), else each image's diagonal.
        principal_point: ``(cx, cy)`` pixels; default: the input's, else each image's centre.
        device: where the tensors go. dtype: their floating dtype (the fitters cast a batch to
            their body model's, float32 for the bundled models: :meth:`PersonBatch.for_model`).
    Raises:
        ValueError: ``people`` is empty, a person's camera is unusable (:func:`person_camera`), or
            ``device`` is one this torch cannot use (:func:`fit3d.devices.check_device`).
        TypeError: an entry of ``people`` is no Person (e.g. an image record), or ``convention`` is
            no KeypointConvention (e.g. the body model itself).
    """
    if isinstance(people, Person):
        raise TypeError("make_batch takes a list of people: make_batch([person], convention)")
    if not people:
        raise ValueError("make_batch needs at least one person")
    if not isinstance(convention, KeypointConvention):
        raise TypeError(f"convention must be a KeypointConvention (e.g. body_model.keypoint_convention), not "
                        f"{type(convention).__name__}")
    if not all(isinstance(p, Person) for p in people):
        bad = next(p for p in people if not isinstance(p, Person))
        raise TypeError(f"make_batch takes people (fit3d.data.records.Person: [p for r in images for p in r.people]), "
                        f"not {type(bad).__name__}")
    check_device(device)
    kps, boxes, focal, pp, size = [], [], [], [], []
    for p in people:
        kp, _ = sanitize_keypoints(p.keypoints_2d, p.image_size)
        kps.append(convert(kp, p.convention, convention))
        boxes.append(checked_bbox(p.bbox, kp, p.image_size)[0])
        f, c = person_camera(p, focal_length, principal_point)
        focal.append(f)
        pp.append(c)
        size.append(p.image_size)

    def t(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float32), dtype=dtype, device=device)

    return PersonBatch(t(kps), t(boxes), t(focal), t(pp), t(size), convention)
