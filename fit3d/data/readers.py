"""Readers from annotation files to :class:`~fit3d.data.records.Person` records.

Input formats:

* COCO keypoint JSON (``person_keypoints_*.json``, and any dataset in COCO format:
  CrowdPose, MPII, Halpe, COCO-WholeBody, OCHuman): the keypoint layout is read from
  the annotation's category (its ``keypoints`` names, spelled as the dataset spells
  them, see :func:`fit3d.data.conventions.convention_from_names`); COCO-WholeBody's
  ``foot_kpts`` are appended as the six foot points.
* OpenPose JSON: one ``<image stem>_keypoints.json`` per image with a ``people`` list;
  ``pose_keypoints_2d`` holds 25 (BODY_25) or 18 (COCO-18) ``x, y, c`` triples.

Every input is accounted for. What cannot be used becomes an :class:`~fit3d.data.records.InputProblem`
(``severity="error"``: an image or annotation that could not be read; ``"warning"``:
used anyway, or left out by design, e.g. crowd regions) and the rest is read:

* image sizes come from the image file's header (no decoding); a JSON size that
  disagrees is a warning, a missing one is taken from the file;
* boxes that are missing, non-finite, empty or outside the image are rebuilt from the
  labelled keypoints (``Person.bbox_note`` says why);
* labelled keypoints with non-finite, far-off or placeholder (0, 0) coordinates become unlabelled
  (one warning counts them; ``Person.keypoints_ignored``);
* keypoint values in a form the format does not define are read as given, with one warning
  counting them (``Person.keypoints_unusual``): numbers written as strings or booleans, and
  COCO visibility flags other than 0, 1, 2 (a flag above 0 is labelled, so detector scores
  such as 0.05 count as labelled; a negative flag is unlabelled);
* an image entry's ``cam_param`` (``focal``, ``princpt``) becomes its people's camera
  (:mod:`fit3d.data.intrinsics`); an unreadable one leaves the image's people unfitted;
* an image id given to several files (entries of two merged files whose ids collide) is an
  error: its annotations cannot be placed and are not fitted (never put on the wrong image);
* annotations that share an id are all kept, flagged ``duplicate_id`` (evaluation
  and exports reject them, since they cannot tell them apart);
* images are keyed by their path relative to the image folder (``sub/a.jpg``), so
  subfolders and extensions never collide;
* in a file whose categories include people (``name`` or ``supercategory`` "person",
  :data:`~fit3d.data.coco.PERSON_CATEGORIES`), annotations of other keypoint categories (animals, objects)
  are left out with one warning per category; a file with no person category is read as
  people, with a warning naming its categories; annotations without keypoints of a category
  that is neither a person nor has keypoints (an instances file's cars) likewise.

Modules: :mod:`fit3d.data.records` (the records), :mod:`fit3d.data.coco`,
:mod:`fit3d.data.openpose`, :mod:`fit3d.data.spin` (the readers), :mod:`fit3d.data.images`,
:mod:`fit3d.data.boxes`, :mod:`fit3d.data.checks`; this module finds and loads the input of a
command (:func:`load_inputs`) and names the readers' public pieces in one place.
"""

from __future__ import annotations

from pathlib import Path

from fit3d.data.boxes import KEYPOINT_BOX_PAD, MAX_BOX_TO_IMAGE, checked_bbox, keypoint_bbox
from fit3d.data.checks import (OUTSIDE_MARGIN, boxes_rebuilt_warning, keypoints_ignored_warning,
                               keypoints_outside_image, unusual_keypoints_warning, with_reader_checks)
from fit3d.data.coco import (PERSON_CATEGORIES, CocoFile, category_conventions, coco_image_key, coco_keypoints,
                             hashable, is_person_category, json_image_size, load_coco, read_coco)
from fit3d.data.images import (END_MARKERS, IMAGE_SUFFIXES, QUARTER_TURNS, find_images, image_key, inspect_image,
                               open_image)
from fit3d.data.keypoints import parse_keypoints, unusual_values
from fit3d.data.openpose import read_openpose
from fit3d.data.records import ImageRecord, InputProblem, Person

__all__ = ["CocoFile", "END_MARKERS", "IMAGE_SUFFIXES", "ImageRecord", "InputProblem", "KEYPOINT_BOX_PAD",
           "MAX_BOX_TO_IMAGE", "OUTSIDE_MARGIN", "PERSON_CATEGORIES", "Person", "QUARTER_TURNS",
           "AmbiguousAnnotations", "boxes_rebuilt_warning", "category_conventions", "check_outputs_apart",
           "checked_bbox", "coco_image_key", "coco_keypoints", "discover_annotations", "find_images", "hashable",
           "image_key", "input_sources", "inspect_image", "is_person_category", "json_image_size", "keypoint_bbox",
           "keypoints_ignored_warning", "keypoints_outside_image", "load_coco", "load_inputs", "open_image",
           "parse_keypoints", "read_coco", "read_openpose", "unusual_keypoints_warning", "unusual_values",
           "with_reader_checks"]


class AmbiguousAnnotations(ValueError):
    """Several annotation files could be the ones of an image folder (the caller must say which)."""


def discover_annotations(images_dir: str | Path) -> Path | None:
    """Find a COCO ``person_keypoints_*.json`` beside or above ``images_dir``.

    Looks in ``images_dir``, its parent, the parent's ``annotations/`` folder (COCO's own layout:
    ``coco/annotations/person_keypoints_val2017.json`` beside ``coco/val2017/``), then the
    grandparent; the first folder holding one decides. When several files match there, the one
    whose name contains the folder's name (``val2017``) is taken.

    Returns:
        The file, or ``None`` when nothing matches.
    Raises:
        AmbiguousAnnotations: a ValueError: several files match and not exactly one names the
            folder (which would be a guess: the message lists them and asks for ``--annotations``).
    """
    images_dir = Path(images_dir).resolve()
    for folder in (images_dir, images_dir.parent, images_dir.parent / "annotations", images_dir.parent.parent):
        cands = sorted(folder.glob("person_keypoints_*.json"))
        if not cands:
            continue
        named = [c for c in cands if images_dir.name in c.name]
        if len(cands) == 1 or len(named) == 1:
            return (named or cands)[0]
        listed = ", ".join(c.name for c in (named or cands))
        raise AmbiguousAnnotations(f"no --annotations given and {len(named or cands)} person_keypoints_*.json files "
                                   f"in {folder} could be the annotations of {images_dir.name}/ ({listed}): pass "
                                   "--annotations FILE.json (annotations= in Python)")
    return None


def input_sources(annotations=None, keypoints_dir=None, spin_npz=None) -> list[str]:
    """The people sources given, by their command-line names (``--annotations``, ``--keypoints``,
    ``--spin-npz``): :func:`load_inputs` reads exactly one."""
    given = dict(zip(("--annotations", "--keypoints", "--spin-npz"), (annotations, keypoints_dir, spin_npz)))
    return [name for name, v in given.items() if v is not None]


def check_openpose_model(openpose_model: str, keypoints_dir) -> None:
    """Refuse an OpenPose model name fit3d does not know, or BODY_25B without an OpenPose folder
    (``keypoints_dir`` None: the option would be ignored).

    Raises:
        ValueError: either.
    """
    from fit3d.data.openpose import body25_convention

    body25_convention(openpose_model)
    if openpose_model != "body_25" and keypoints_dir is None:
        raise ValueError(f"--openpose-model {openpose_model} (openpose_model= in Python) is for OpenPose input "
                         "(--keypoints DIR, keypoints_dir=)")


def check_outputs_apart(keypoints_dir: str | Path | None, out_dir: str | Path | None) -> None:
    """Refuse an output folder that is, or lies inside, the OpenPose keypoint folder: every JSON
    file there is read as keypoints, so fit3d's own (``summary.json``, ``fit_settings.json``...)
    would be input problems of every later run.

    Raises:
        ValueError: ``out_dir`` is ``keypoints_dir`` or inside it (naming both).
    """
    if keypoints_dir is None or out_dir is None:
        return
    k, o = Path(keypoints_dir).resolve(), Path(out_dir).resolve()
    if o == k or k in o.parents:
        raise ValueError(f"the output folder {out_dir} is {'' if o == k else 'inside '}the OpenPose keypoint folder "
                         f"{keypoints_dir}, all of whose JSON files are read as keypoints (fit3d's own summary and "
                         "settings files too, on the next run): choose an output folder outside it")


def load_inputs(images: str | Path, annotations: str | Path | None = None, keypoints_dir: str | Path | None = None,
                spin_npz: str | Path | None = None, only=None,
                openpose_model: str = "body_25") -> tuple[list[ImageRecord], list[InputProblem], Path | None]:
    """The people of a folder of images, from the one source given: OpenPose ``keypoints_dir``,
    a SPIN-style ``spin_npz``, or COCO ``annotations`` (found by :func:`discover_annotations`
    when none is given). ``only``: a test of image keys (one shard's): the images it refuses are
    records without people, neither opened nor their people parsed (see :func:`~fit3d.data.coco.read_coco`).
    ``openpose_model``: the OpenPose model of ``keypoints_dir``'s 75-value people (``"body_25"`` or
    ``"body_25b"``, :func:`~fit3d.data.openpose.read_openpose`).

    Returns:
        ``(records, problems, annotations_used)``: the image records, the input problems
        (see :func:`~fit3d.data.coco.read_coco`), and the COCO JSON that was read (None for the other sources).
    Raises:
        FileNotFoundError: ``images`` is not a folder, a source is missing, or no
            COCO JSON was given or found. ValueError: a corrupt COCO or SPIN file (a corrupt
            OpenPose file is one image's input problem, in ``problems``), more than
            one source given (:func:`input_sources`), or an ``openpose_model`` that is unknown or
            given without ``keypoints_dir`` (:func:`check_openpose_model`).
        AmbiguousAnnotations: a ValueError: no annotations given and several files could be
            them (:func:`discover_annotations`).
    """
    sources = input_sources(annotations, keypoints_dir, spin_npz)
    if len(sources) > 1:
        raise ValueError(f"give one source of people, not {' and '.join(sources)}")
    check_openpose_model(openpose_model, keypoints_dir)
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"--images {images} (images= in Python) is not a folder")
    if keypoints_dir is not None:
        return (*read_openpose(keypoints_dir, images, only, openpose_model), None)
    if spin_npz is not None:
        from fit3d.data.spin import read_spin

        return (*read_spin(spin_npz, images, only), None)
    if annotations is None:
        annotations = discover_annotations(images)
        if annotations is None:
            raise FileNotFoundError(
                f"no --annotations given and no person_keypoints_*.json beside or above {images}; "
                "pass --annotations FILE.json (COCO) or --keypoints DIR (OpenPose); annotations= or keypoints_dir= in Python"
            )
    return (*read_coco(annotations, images, only), Path(annotations))
