"""The records the readers return: :class:`Person` (one annotated person), :class:`ImageRecord`
(an image and its people) and :class:`InputProblem` (a piece of input that could not be used, or
was used with a caveat, and why). :mod:`fit3d.data.readers` says how each input becomes them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fit3d.data.conventions import KeypointConvention


@dataclass
class Person:
    """One annotated person.

    Attributes:
        image_key: the image's path relative to the image folder (``sub/a.jpg``), which
            names the output file.
        image_path: path of the image file.
        image_size: ``(width, height)`` in pixels (from the image file).
        annot_id: annotation id (COCO ``id``; OpenPose: index in ``people``; SPIN: row).
        bbox: ``(x, y, w, h)`` in pixels; from the annotation, or the box of the
            labelled keypoints when the format has none or the annotation's is unusable.
        keypoints_2d: ``(K, 3)`` float array ``x, y, confidence`` in pixels, in
            ``convention``. COCO visibility flags become confidences
            (0 unlabelled, 1 labelled, 2 visible -> 0, 1, 1).
        convention: the keypoint convention of ``keypoints_2d``.
        person_index: position of the person within its image.
        bbox_note: why the box was rebuilt from the keypoints ("" when it was not).
        duplicate_id: another annotation of the file has the same id.
        camera: the input's intrinsics ``((fx, fy), (cx, cy))`` pixels (COCO ``cam_param``,
            SPIN ``cam_int`` / ``focal_length``: :mod:`fit3d.data.intrinsics`), None when it
            has none (the fit then uses the image diagonal and centre).
        keypoints_ignored: labelled keypoints of the input whose coordinates were unusable
            (non-finite, beyond :data:`~fit3d.data.keypoints.MAX_KEYPOINT_PX`, the placeholder
            ``(0, 0)``, or farther outside the image than its larger side): the readers
            store them as unlabelled ``(0, 0, 0)`` (:func:`~fit3d.data.keypoints.sanitize_keypoints`),
            so fits and exports never see them, and count them here (one warning per input:
            :func:`~fit3d.data.checks.keypoints_ignored_warning`).
        track_id: the input's id of the person across frames (OpenPose's ``person_id`` with
            tracking on; a COCO-format annotation's ``track_id``, as PoseTrack writes), -1 when the
            input has none (OpenPose writes ``[-1]`` without tracking).
        keypoints_unusual: values of the input's keypoints in a form its format does not define,
            read as given: numbers written as strings (``"12.5"``) or booleans, and COCO
            visibility flags other than 0, 1, 2 (one warning per input:
            :func:`~fit3d.data.checks.unusual_keypoints_warning`).
    """

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    annot_id: int
    bbox: np.ndarray
    keypoints_2d: np.ndarray
    convention: KeypointConvention
    person_index: int = 0
    bbox_note: str = ""
    duplicate_id: bool = False
    camera: tuple[tuple[float, float], tuple[float, float]] | None = None
    keypoints_ignored: int = 0
    keypoints_unusual: int = 0
    track_id: int = -1

    @property
    def num_visible(self) -> int:
        """Number of keypoints with finite coordinates and confidence > 0."""
        kp = self.keypoints_2d
        ok = np.isfinite(kp).all(axis=1) & (kp[:, 2] > 0)
        return int(ok.sum())


@dataclass
class InputProblem:
    """A piece of input that could not be used (``severity="error"``) or was used with a
    caveat or left out by design (``"warning"``), and why."""

    source: str
    reason: str
    severity: str = "error"
    #: the key of the image this problem keeps from being fitted (an image that could not be
    #: opened), or None: the shard it would have been fitted by is told apart from one that got no image
    image: str | None = None


@dataclass
class ImageRecord:
    """All people annotated in one image (possibly none): what the readers give and what
    :func:`fit3d.pipeline.run` fits and writes (one ``<image_key>.npz`` per record).

    Attributes:
        image_key: the image's path relative to the image folder (``sub/a.jpg``); names the output.
        image_path: path of the image file (read only to render; fitting needs the keypoints).
        image_size: ``(width, height)`` pixels; ``(0, 0)`` for an image not opened (its people
            then need a given camera, :attr:`Person.camera`, or a run's ``focal_length``).
        people: its :class:`Person` records, in order (each with the same ``image_key``).
        dropped: see below.

    One's own detections become records like this (one person, ``keypoints_17x3`` COCO-17 points
    ``x, y, confidence`` in pixels, a box ``x, y, w, h``; :func:`fit3d.pipeline.run` unlabels
    unusable points as the readers do)::

        from pathlib import Path
        import numpy as np
        from fit3d.body_models import build_body_model
        from fit3d.data.conventions import COCO17  # or get_convention("halpe26"), ...
        from fit3d.data.records import ImageRecord, Person
        from fit3d.fitters.build import build_eft
        from fit3d.pipeline import RunConfig, run

        model = build_body_model("anny")
        person = Person("a.jpg", Path("frames/a.jpg"), (1920, 1080), 0, np.array([x, y, w, h]),
                        keypoints_17x3, COCO17)
        run([ImageRecord("a.jpg", Path("frames/a.jpg"), (1920, 1080), [person])], build_eft(model), model,
            RunConfig("fits/"))  # then: fit3d export --fits fits/ --format humandata --out a.npz
    """

    image_key: str
    image_path: Path
    image_size: tuple[int, int]
    people: list[Person] = field(default_factory=list)
    #: Sources of this image's annotations that were left out because they could not be read
    #: (each is also an :class:`InputProblem`): its output lacks those people, so a later run
    #: fits the image again (a fixed input then brings them in).
    dropped: list[str] = field(default_factory=list)

    def input_digest(self) -> str:
        """A short hash (16 hex digits) of what the fits of this image are made from: its size and
        each person's annotation id, keypoints, box, keypoint layout, camera, duplicate flag and
        tracking id (when it has one), in order. Stored in the image's output (``input_digest``), so
        that a rerun from changed annotations fits again exactly the images whose people changed
        (:func:`fit3d.pipeline.selection.select_images`)."""
        h = hashlib.sha1(repr(tuple(self.image_size)).encode())
        for p in self.people:
            h.update(repr((int(p.annot_id), p.convention.names, p.camera, bool(p.duplicate_id))).encode())
            if p.track_id != -1:  # (outputs of inputs without tracking keep their digest)
                h.update(repr(("track", int(p.track_id))).encode())
            h.update(np.ascontiguousarray(p.keypoints_2d, dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(p.bbox, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]
