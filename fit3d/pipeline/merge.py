"""One dataset file from a run's per-image outputs (every shard), and one summary.

``merge_fits(DIR)`` stacks the people of every ``DIR/**/<image>.npz`` into arrays with a
leading dimension N (people), adds each person's ``image`` (relative path),
``image_size`` and ``shard`` of origin, and totals the shards' ``summary*.json`` files.
Each shard writes only its own images and summary; nothing reads another shard's
outputs until this merge, run once at the end. Shards of a recorded ``i/n`` split that left
neither outputs nor a summary are listed as ``missing_shards``, shards whose latest run did not
fit all its images (interrupted, killed, cut short by ``--limit``) as ``unfinished_shards``
(the merge still writes what exists). A fitting run that later writes into the folder removes the merged dataset
(:func:`retire_merged`): it no longer holds those fits.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from fit3d.data.conventions import KeypointConvention, union_convention
from fit3d.data.writers import read_fit, require_fit_files
from fit3d.pipeline.records import KEYPOINT_FIELDS, reason_kind, to_layout
from fit3d.pipeline.settings import same_settings
from fit3d.pipeline.summary import shard_file

#: Per-image fields copied to every person of the image.
IMAGE_FIELDS = ("image", "image_size", "shard", "fitter", "model")
#: Per-image fields stored once: the joints must agree across the merged files; files of
#: different keypoint layouts are merged in the union of their layouts (by name).
SHARED_FIELDS = ("keypoint_names", "joint_names")
#: Fields that every output of fit3d with people holds (per person, stacked): an output with some
#: of them but not all is damaged and is named with the unreadable ones, not merged.
CORE_FIELDS = ("annot_id", "status", "valid", "global_orient", "body_pose", "betas", "transl", "keypoints_2d")
#: Per-image bookkeeping of the runs, not merged into the dataset (``input_digest``: what a rerun
#: compares to find the images whose annotations changed).
RUN_FIELDS = ("input_digest",)
#: Per-person fields that outputs of earlier fit3d versions lack, with the value they stand for
#: there: a folder fitted partly before and partly after merges (its people had no tracking id).
ADDED_LATER = {"track_id": np.int64(-1)}
#: The default dataset file of :func:`write_merged`, in the run folder.
DATASET_FILE = "dataset.npz"
#: Summary counters that are totalled over the shards' runs.
COUNTS = ("images", "images_written", "images_already_done", "images_without_people", "images_failed",
          "images_incomplete", "people_fitted", "people_valid", "people_skipped", "people_failed", "input_errors",
          "input_warnings")


class NoReadableFits(ValueError):
    """None of a folder's per-image fits could be read: nothing to merge or export. ``unreadable``
    holds ``{file, reason}`` per file (the commands name them and exit 3, as for some unreadable
    fits)."""

    def __init__(self, fits_dir: Path, unreadable: list[dict]) -> None:
        super().__init__(f"none of the {len(unreadable)} per-image fits under {fits_dir} can be read")
        self.unreadable = unreadable


def _model_of(fit: dict) -> str:
    """A fit file's body model as its ``model`` field names it, with its joint count."""
    model = str(np.asarray(fit["model"]).reshape(-1)[0]) if "model" in fit else "model not recorded"
    return f"{model}, {len(fit['joint_names'])} joints"


def _person_keys(d: dict) -> list[str]:
    """The per-person fields of one output (sorted)."""
    return sorted(k for k in d if k not in IMAGE_FIELDS and k not in SHARED_FIELDS and k not in RUN_FIELDS)


class _Chunks:
    """The merged people, gathered file by file into chunks of consecutive files of one keypoint
    layout (at most :attr:`FILES` files each), so that a dataset of millions of people is held as a
    few hundred arrays per field rather than one small array per field and file (whose
    overheads took ~4x the dataset's memory), and each field is concatenated on its own
    (:meth:`concatenate`), freeing its chunks as it goes."""

    #: Files per chunk.
    FILES = 1024

    def __init__(self) -> None:
        self.done: list[tuple[KeypointConvention, dict[str, np.ndarray]]] = []
        self.layout: KeypointConvention | None = None
        self.pending: dict[str, list[np.ndarray]] = {}
        self.files = 0

    def add(self, layout: KeypointConvention, people: dict[str, np.ndarray]) -> None:
        """One file's people: every per-person field with leading dim P, in ``layout``."""
        if self.files and (layout.names != self.layout.names or self.files >= self.FILES):
            self._flush()
        self.layout = layout
        for k, v in people.items():
            self.pending.setdefault(k, []).append(v)
        self.files += 1

    def _flush(self) -> None:
        self.done.append((self.layout, {k: np.concatenate(v) for k, v in self.pending.items()}))
        self.pending, self.files = {}, 0

    def concatenate(self) -> tuple[dict[str, np.ndarray], KeypointConvention | None]:
        """``(arrays, layout)``: every field over every chunk (leading dim N), the keypoint fields
        in the union of the chunks' layouts (:func:`fit3d.pipeline.records.to_layout`), and that
        union (None without people). Empties the chunks."""
        if self.files:
            self._flush()
        if not self.done:
            return {}, None
        union = union_convention([c for c, _ in self.done], name="merged")
        out = {}
        for k in dict.fromkeys(k for _, c in self.done for k in c):
            parts = [(src, c.pop(k)) for src, c in self.done if k in c]
            if k in KEYPOINT_FIELDS:
                parts = [(src, to_layout({k: a}, src, union)[k]) for src, a in parts]
            out[k] = np.concatenate([a for _, a in parts])
            del parts
        self.done = []
        return out, union


def merge_fits(fits_dir: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Stack every person of every per-image output under ``fits_dir``.

    Returns:
        ``(arrays, summary)``: ``arrays`` holds every person field with leading dim N
        (images without people add none), the :data:`IMAGE_FIELDS` per person and the
        :data:`SHARED_FIELDS` once (outputs of different keypoint layouts, e.g. OpenPose
        BODY_25 and COCO-18 files in one run, are put in the union of the layouts:
        :func:`fit3d.pipeline.records.to_layout`); ``summary`` counts people by status and skip reason,
        images, unreadable outputs, pending failures (``*.failed.json``), images written
        without unreadable annotations (``*.incomplete.json``), and ``latest_runs_total``:
        the counts of each summary file's latest run, summed (a resumed run's summary
        describes that run only; the people totals come from the outputs themselves), and
        ``settings``: the distinct fit settings the summaries record (one entry when every
        shard agrees; :mod:`fit3d.pipeline.settings`), ``complete_splits`` (:func:`complete_splits`) and ``missing_shards``: the ``"i/n"``
        shards of every recorded split that left neither an output nor a summary
        (:func:`missing_shards`), ``unfinished_shards`` (:func:`unfinished_shards`; a split with
        one is not complete), ``shards`` (those with people in the outputs) and
        ``shards_without_people`` (finished shards whose latest run had no image, or only images
        without people, e.g. more shards than images).
        An output that lacks one of the :data:`CORE_FIELDS` (damaged, or rewritten outside fit3d)
        is counted with the unreadable ones, named with the reason, and not merged. Each
        ``unreadable_outputs`` entry is ``{file, reason, kind}``, ``kind`` ``"fit"`` (a per-image
        output: its people are not in ``arrays``), ``"dataset"`` (a merged dataset left in the
        folder) or ``"summary"`` (a summary file: its run's counts are not in the totals).
    Raises:
        NoReadableFits: no output can be read. ValueError: the outputs hold different joints or
            fields (runs of different models or fitters in one folder; outputs of other settings
            with the same fields are merged, their settings listed in ``settings``), there is none, or a
            subfolder holds a run's summary (the folder of several runs, e.g. NeuralAnnot's of
            several image folders: each is merged on its own).
    """
    fits_dir = Path(fits_dir)
    files = require_fit_files(fits_dir)
    nested = sorted({p.parent.relative_to(fits_dir).as_posix() for p in fits_dir.rglob("summary*.json")
                     if p.parent != fits_dir})
    if nested:  # e.g. NeuralAnnot's OUT/<folder> per image folder: their image paths are relative to each
        raise ValueError(f"{fits_dir} holds other run folders ({', '.join(nested[:5])}"
                         f"{', ...' if len(nested) > 5 else ''}, each with its own summary): merge or export each "
                         f"run's folder on its own, e.g. --fits {fits_dir / nested[0]}")
    chunks = _Chunks()
    shared: dict[str, np.ndarray] = {}
    unreadable, images, n, person_keys = [], 0, 0, None
    for f in files:
        try:
            d = read_fit(f)
        except (OSError, ValueError) as e:
            unreadable.append(dict(file=str(f.relative_to(fits_dir)), reason=str(e), kind="fit"))
            continue
        if np.ndim(d.get("image", "")) > 0:  # one image per person: a merged dataset (--out FITS/a.v2.npz)
            unreadable.append(dict(file=str(f.relative_to(fits_dir)), reason=(
                "a merged dataset (one image per person), not a per-image fit: move it out of the folder"),
                kind="dataset"))
            continue
        lacking = [k for k in CORE_FIELDS if k not in d]
        if lacking and len(lacking) < len(CORE_FIELDS):  # (none: an output without people) damaged, or cut
            # down outside fit3d: named, not merged
            unreadable.append(dict(file=str(f.relative_to(fits_dir)), reason=(
                f"lacks the fields {lacking} that every fit has (damaged or rewritten outside fit3d): delete it "
                "and rerun the fitting command to refit it"), kind="fit"))
            continue
        p = len(d.get("annot_id", ()))
        if p:
            d = {**{k: np.full(p, v) for k, v in ADDED_LATER.items()}, **d}
        if p and person_keys is None:
            person_keys = _person_keys(d)
        elif p and _person_keys(d) != person_keys:
            raise ValueError(f"{f}: fields {sorted(set(_person_keys(d)) ^ set(person_keys))} differ from the other "
                             "files' (runs of different fitters or fit3d versions in one folder? merge them apart)")
        images += 1
        if p == 0:
            continue
        if "joint_names" not in shared:
            shared["joint_names"], first = d["joint_names"], (f, _model_of(d))
        elif not np.array_equal(shared["joint_names"], d["joint_names"]):
            raise ValueError(f"fits of two body models in one folder: {f.relative_to(fits_dir)} ({_model_of(d)}) and "
                             f"{first[0].relative_to(fits_dir)} ({first[1]}) have other joints; merge or export "
                             "each model's fits apart")
        people = {k: d[k] for k in person_keys}
        people.update({k: np.repeat(d[k][None], p, axis=0) for k in IMAGE_FIELDS if k in d})
        chunks.add(KeypointConvention("file", tuple(str(n) for n in d["keypoint_names"])), people)
        n += p
    if not images and len(unreadable) == len(files):
        raise NoReadableFits(fits_dir, unreadable)
    arrays, union = chunks.concatenate()
    if union is not None:
        shared["keypoint_names"] = np.asarray(union.names, dtype=str)
    arrays.update(shared)
    summary = _summary(fits_dir, arrays, n, images, unreadable)
    return arrays, summary


def _summary(fits_dir: Path, arrays: dict, n: int, images: int, unreadable: list) -> dict:
    status = arrays.get("status", np.zeros(0, dtype=str))
    reasons = [reason_kind(r) for r, s in zip(arrays.get("skip_reason", []), status) if s == "skipped"]
    fitted = status == "fitted"
    err = arrays["reproj_error_px"][fitted] if n else np.zeros(0)
    err = err[np.isfinite(err)]
    runs, started = [], []
    for f in sorted(fits_dir.glob("summary*.json")):
        try:
            data = json.loads(f.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("this_run", {}), dict):
                raise ValueError("not a fit3d summary (a JSON object whose this_run is one)")
        except (OSError, ValueError) as e:  # (a null summary was a TypeError traceback: a review)
            unreadable.append(dict(file=f.name, reason=str(e), kind="summary"))
            continue
        if "this_run" in data:  # a run's summary (not only an earlier merge's)
            runs.append(dict(file=f.name, **data))
        elif isinstance(data, dict) and data.get("running"):  # its run never wrote its summary
            started.append(dict(file=f.name, **data))
    pending = sorted(str(p.relative_to(fits_dir)) for p in fits_dir.rglob("*.failed.json"))
    incomplete = sorted(str(p.relative_to(fits_dir)) for p in fits_dir.rglob("*.incomplete.json"))
    totals = {k: sum(int(r.get("this_run", {}).get(k, 0)) for r in runs) for k in COUNTS}
    if runs and all(isinstance(r.get("input_problems"), list) for r in runs):
        # every shard reads (and reports) the whole input: a problem counts once, not once per shard
        distinct = {(p.get("source"), p.get("reason"), p.get("severity")) for r in runs for p in r["input_problems"]
                    if isinstance(p, dict)}
        totals.update(input_errors=sum(sev == "error" for _, _, sev in distinct),
                      input_warnings=sum(sev != "error" for _, _, sev in distinct))
    settings = []  # what the runs were fitted with: one entry when every shard agrees (as a run's check says)
    for r in runs:
        if isinstance(r.get("settings"), dict) and not any(same_settings(r["settings"], s) for s in settings):
            settings.append(r["settings"])
    shards = sorted(set(map(str, arrays.get("shard", []))))
    unfinished = unfinished_shards(runs, started, shards, {u["file"] for u in unreadable})
    seen = shards + [str(r["shard"]) for r in runs + started if "shard" in r]
    return dict(
        people=n, people_fitted=int(fitted.sum()), people_valid=int((arrays.get("valid", fitted) & fitted).sum()),
        people_skipped=len(reasons), skipped_by_reason=dict(Counter(reasons)), images_with_outputs=images,
        reproj_error_px=dict(median=float(np.median(err)) if len(err) else None,
                             mean=float(err.mean()) if len(err) else None),
        shards=shards, shards_without_people=sorted({str(r["shard"]) for r in runs if "shard" in r
                                                     and _nothing_to_fit(r.get("this_run", {}))} - set(shards)
                                                    - {u["shard"] for u in unfinished}, key=_shard_order),
        missing_shards=missing_shards(seen), unfinished_shards=unfinished,
        complete_splits=[n for n in complete_splits(seen)
                         if not any(u["shard"].endswith(f"/{n}") for u in unfinished)],
        unreadable_outputs=unreadable, pending_failures=pending, pending_incomplete=incomplete,
        latest_runs_total=totals, runs=[r.get("file") for r in runs], settings=settings,
    )


def unfinished_shards(runs: list[dict], started: list[dict], shards: list[str],
                      unreadable: set[str] = frozenset()) -> list[dict]:
    """The shards whose latest run did not fit all its images: ``{"shard": "i/n", "why": ...}``.

    Args:
        runs: the run summaries (``this_run`` counts): unfinished when an error stopped the run
            (``stopped_by``), when interrupted, or when ``--limit`` left images of the shard unfitted
            (``images_left_by_limit``).
        started: summaries a run wrote when it started (``running``) and never replaced: that run
            is still going, or was killed outright (SIGKILL, a lost node).
        shards: the shards of the outputs: one without any summary never finished a run.
        unreadable: names of the folder's files that could not be read: a shard whose summary is
            one of them is said to have an unreadable summary, not none (a review).
    """
    rerun = "rerun it (the same command resumes)"
    out = []
    for r in started:
        out.append(dict(shard=str(r.get("shard")), why=f"its run started {r.get('started', '')} has not finished "
                                                       f"(still running, or killed): when it is not running, {rerun}"))
    for r in runs:
        this = r.get("this_run", {})
        if r.get("stopped_by"):
            out.append(dict(shard=str(r.get("shard")), why=f"its latest run stopped with an error ({r['stopped_by']}): "
                                                           f"fix it, then {rerun}"))
        elif this.get("interrupted"):
            out.append(dict(shard=str(r.get("shard")),
                            why=f"its latest run was interrupted (exit {this.get('exit_code')}): {rerun}"))
        elif r.get("images_left_by_limit"):
            out.append(dict(shard=str(r.get("shard")), why=f"its latest run's --limit left "
                                                           f"{r['images_left_by_limit']} images unfitted: run it "
                                                           "without --limit (or with a larger one)"))
    summarised = {str(r.get("shard")) for r in runs + started}
    for s in shards:
        if s in summarised or not _is_shard(s):
            continue
        i, n = (int(x) for x in s.split("/"))
        if shard_file(".", "summary", (i - 1, n)).name in unreadable:
            out.append(dict(shard=s, why=f"its summary cannot be read (named above), so whether its run finished "
                                         f"is not known: {rerun} to be sure"))
        else:
            out.append(dict(shard=s, why=f"it left outputs but no summary (its run did not finish, or the folder "
                                         f"was copied without its summaries): {rerun}"))
    return out


def _nothing_to_fit(this_run: dict) -> bool:
    """Whether a run's counts say its shard had no image, or only images without people (not a
    shard whose images were all done before, or all failed)."""
    images, without_people = int(this_run.get("images") or 0), int(this_run.get("images_without_people") or 0)
    return bool(this_run.get("shard_empty")) or (images > 0 and images == without_people)


def _shard_order(text: str) -> tuple:
    """Sort key of shard names: ``"i/n"`` by ``(n, i)``, others after, by name."""
    return (0, *map(int, text.split("/")[::-1])) if _is_shard(text) else (1, 0, 0, text)


def _is_shard(text: str) -> bool:
    """Whether ``text`` reads ``"i/n"``."""
    i, _, n = str(text).partition("/")
    return i.isdigit() and n.isdigit()


def _gaps(seen: list[str]) -> dict[int, list[str]]:
    """Per split ``n`` that ``seen`` records (``"i/n"``, one-based; other entries ignored), the
    shards of it that ``seen`` lacks, in order."""
    pairs = {tuple(int(x) for x in str(s).split("/")) for s in seen if _is_shard(s)}
    return {n: [f"{i}/{n}" for i in range(1, n + 1) if (i, n) not in pairs] for n in sorted({n for _, n in pairs})}


def missing_shards(seen: list[str]) -> list[str]:
    """The shards ``"i/n"`` (one-based) of every split ``n`` that ``seen`` records, that ``seen``
    lacks, in order: ``["2/2"]`` -> ``["1/2"]``. Entries that are not ``"i/n"`` are ignored.
    A folder refitted with another split keeps its earlier outputs' shards, so each recorded
    ``n`` is checked on its own."""
    return [s for gaps in _gaps(seen).values() for s in gaps]


def complete_splits(seen: list[str]) -> list[int]:
    """The splits ``n`` of which ``seen`` records every shard ``"i/n"`` (``1`` for an unsharded run):
    a folder refitted with another split may lack that split's shards and no image."""
    return [n for n, gaps in _gaps(seen).items() if not gaps]


def check_dataset_name(out: str | Path) -> None:
    """Refuse a dataset path that does not end in ``.npz`` (numpy would write an ``.npz`` under
    another name than the one given).

    Raises:
        ValueError: another suffix, or none (one line naming the path to give).
    """
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"{out.name}: the dataset is an .npz file (give a name ending in .npz)")


def write_merged(fits_dir: str | Path, out: str | Path | None = None) -> tuple[Path, dict]:
    """:func:`merge_fits`, written atomically to ``out`` (default ``fits_dir/dataset.npz``)
    with the totals under ``"merged"`` in ``fits_dir/summary.json`` (the shards' own
    ``summary.shard-i-of-n.json`` files, and an unsharded run's summary, are kept).

    Returns:
        ``(dataset path, summary)``.
    Raises:
        ValueError: see :func:`merge_fits`; or the dataset or the totals cannot be written (a full
            disk; then no dataset is left); or ``out`` does not end in ``.npz``
            (:func:`check_dataset_name`) or lies in the folder under a name a per-image fit has (a dot
            before ``.npz``: a later merge would read it as one).
    """
    from fit3d.data.writers import write_json, write_npz

    fits_dir = Path(fits_dir)
    out = fits_dir / DATASET_FILE if out is None else Path(out)
    check_dataset_name(out)
    if out.resolve().is_relative_to(fits_dir.resolve()) and Path(out.stem).suffix:
        raise ValueError(f"{out.name}: inside the fits folder a name with a dot before .npz reads as an image's fit "
                         f"(a.jpg.npz): name it without one (e.g. {out.stem.replace('.', '_')}.npz), or write it "
                         "outside the folder")
    arrays, summary = merge_fits(fits_dir)
    path = fits_dir / "summary.json"
    try:  # (read before the dataset is written: a damaged one left a dataset and stopped every merge)
        existing = json.loads(path.read_text()) if path.is_file() else {}  # an unsharded run's own summary stays
    except (OSError, ValueError):  # damaged: named in the totals' unreadable_outputs (merge_fits), replaced
        existing = {}
    existing = existing if isinstance(existing, dict) else {}
    try:
        write_npz(out, arrays)
    except OSError as e:  # (a full disk, a folder that cannot be written: one line, not a traceback)
        raise ValueError(f"cannot write the merged dataset {out}: {e}") from e
    summary["dataset"] = str(out.resolve())  # (a later run, from any folder, finds it to retire it)
    summary["fits_dir"] = str(fits_dir.resolve())  # (a copy of the folder is told from the folder merged)
    # the earlier merges' files still there (--out FITS/a.npz, then dataset.npz): a later run removes
    # those inside the folder and says that those outside it are out of date (only the latest
    # outside was, found by a review)
    recorded, earlier = _recorded_datasets(fits_dir, existing.get("merged"))
    previous = [str(p.resolve()) for p in (*earlier, recorded) if p is not None and p.is_file()
                and str(p.resolve()) != summary["dataset"]]
    if previous:
        summary["earlier_datasets"] = sorted(set(previous))
    try:
        write_json(path, dict(existing, merged=summary))
    except OSError as e:  # unrecorded, no later run would retire the dataset: it goes too
        out.unlink(missing_ok=True)
        raise ValueError(f"cannot write the merged totals into {path}: {e} (nothing merged)") from e
    return out, summary


def _recorded_datasets(fits_dir: Path, record) -> tuple[Path | None, list[Path]]:
    """The dataset files a ``merged`` record of ``fits_dir``'s summary names: ``(its dataset, the
    earlier merges' files)``. A record that names another folder as the one merged (this folder
    is a copy of it, or it moved): the files it recorded inside that folder are looked for at the
    same place in this one; datasets outside it belong to that folder when it still exists (a
    copy: left out), else to this one (moved)."""
    record = record if isinstance(record, dict) else {}
    recorded = Path(record["dataset"]) if isinstance(record.get("dataset"), str) else None
    listed = record.get("earlier_datasets")
    earlier = [Path(p) for p in listed if isinstance(p, str)] if isinstance(listed, list) else []
    merged_dir = Path(record["fits_dir"]) if isinstance(record.get("fits_dir"), str) else None
    if merged_dir is not None and merged_dir != fits_dir.resolve():
        copy = merged_dir.exists()
        earlier = [fits_dir / p.relative_to(merged_dir) if p.is_relative_to(merged_dir) else p for p in earlier
                   if p.is_relative_to(merged_dir) or not copy]
        if recorded is not None and recorded.is_relative_to(merged_dir):
            recorded = fits_dir / recorded.relative_to(merged_dir)
        elif copy:  # the dataset outside is the original folder's, not this one's
            recorded = None
    return recorded, earlier


def retire_merged(fits_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """Make an earlier merge of ``fits_dir`` no longer look current, before a run writes new fits
    into it: the merged dataset files inside the folder (``dataset.npz``, the ``--out`` that
    ``summary.json``'s ``merged`` entry records, and the earlier merges' files that it records as
    ``earlier_datasets``) are removed (an unlink: atomic), then the
    ``merged`` totals are dropped from ``summary.json`` (the file removed when it held nothing
    else). A ``dataset.npz`` that is not a merge's output (no ``image``, ``shard``, ``annot_id``)
    is kept. Nothing happens without an earlier merge.

    A record that names another folder as the one merged (``fits_dir``: this folder is a copy of
    it, summaries included, or the folder moved): a dataset it recorded inside that folder is
    looked for at the same place in this one; one outside it belongs to that folder when it still
    exists (a copy: not this folder's, not reported), else to this one (moved: out of date).

    Returns:
        ``(removed, elsewhere)``: the dataset files removed, and the recorded dataset files outside
        the folder (kept, but out of date; the latest merge's first); both empty without an earlier
        merge.
    Raises:
        ValueError: a dataset file or ``summary.json`` cannot be removed or rewritten.
    """
    from fit3d.data.writers import write_json

    fits_dir = Path(fits_dir)
    path = fits_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = {}
    merged = summary.pop("merged", None) if isinstance(summary, dict) else None
    recorded, earlier = _recorded_datasets(fits_dir, merged)
    found = list({p.resolve(): p for p in (fits_dir / DATASET_FILE, recorded, *earlier)
                  if p is not None and p.is_file()}.values())
    inside = [p for p in found if p.resolve().is_relative_to(fits_dir.resolve())]
    removed = [p for p in inside if p == recorded or p in earlier or _is_merged_dataset(p)]
    try:
        for p in removed:
            p.unlink(missing_ok=True)
        if merged is not None:
            if summary:
                write_json(path, summary)
            else:  # a sharded folder's summary.json holds only the merged totals
                path.unlink(missing_ok=True)
    except OSError as e:
        raise ValueError(f"cannot retire the merged dataset of {fits_dir} before writing new fits there: {e}") from e
    return sorted(removed), [p for p in found if p not in inside]


def _is_merged_dataset(path: Path) -> bool:
    """Whether ``path`` reads as :func:`write_merged`'s output (per-person ``image``, ``shard``, ``annot_id``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"image", "shard", "annot_id"} <= set(z.files)
    except (OSError, ValueError):
        return False
