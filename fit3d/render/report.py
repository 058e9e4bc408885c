"""A self-contained HTML page to review a run: every person, worst reprojection error first."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np

from fit3d.data.writers import atomic_write_bytes, fit_name, read_fit, require_fit_files


def collect_people(fits_dir: str | Path) -> list[dict]:
    """One row per person of every ``.npz`` in ``fits_dir``: file (the fit file's name, its relative
    path without ``.npz``, which names its render), image, annot_id, status, reproj_error_px, valid,
    skip_reason; sorted worst first (skipped people last).

    Raises:
        ValueError: ``fits_dir`` holds no per-image ``.npz``.
    """
    rows = []
    for f in require_fit_files(fits_dir):
        try:
            d = read_fit(f)
            n = len(d["status"])
        except Exception as e:  # noqa: BLE001 - a corrupt file is a row of the report, not a crash
            rel = f.relative_to(fits_dir).as_posix()
            rows.append(dict(file=rel, image=rel, annot_id=-1, status="unreadable", reproj_error_px=float("nan"),
                             valid=False, skip_reason=str(e)))
            continue
        name = fit_name(fits_dir, f)
        for i in range(n):
            rows.append(dict(
                file=name, image=str(d["image"]), annot_id=int(d["annot_id"][i]), status=str(d["status"][i]),
                reproj_error_px=float(d["reproj_error_px"][i]), valid=bool(d["valid"][i]),
                skip_reason=str(d["skip_reason"][i]), fitter=str(d["fitter"]),
            ))
    return sorted(rows, key=lambda r: (r["status"] != "fitted", -np.nan_to_num(r["reproj_error_px"], nan=-1.0)))


def histogram_png(errors: np.ndarray) -> bytes:
    """PNG of a histogram of reprojection errors (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    if len(errors):
        ax.hist(errors, bins=min(40, max(5, len(errors) // 2)), color="#4a7bb7")
        ax.axvline(float(np.median(errors)), color="k", ls="--", label=f"median {np.median(errors):.2f} px")
        ax.legend()
    ax.set_xlabel("mean reprojection error per person (px)")
    ax.set_ylabel("people")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _thumb(path: Path, width: int = 360) -> tuple[str, tuple[int, int]] | None:
    """A JPEG data URL of the image and its size (pixels), or None when it cannot be read (the
    rows show no picture)."""
    from PIL import Image

    from fit3d.data.images import shown
    from fit3d.render.fits import to_rgb

    try:
        with Image.open(path) as im:
            im.load()
            im = to_rgb(shown(im))  # as shown, the frame of the fits; 16-bit and float images stretched
            im.thumbnail((width * 2, width))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), im.size


#: People (the worst first) whose image is shown in the report by default: each image is
#: embedded once, but a page of every image of a large run would not open (COCO train: ~60k
#: images, gigabytes); the other rows link to their render when there is one.
REPORT_THUMBNAILS = 300


def write_report(fits_dir: str | Path, out: str | Path, renders_dir: str | Path | None = None,
                 images_dir: str | Path | None = None, thumbnails: int = REPORT_THUMBNAILS) -> dict:
    """Write the HTML report.

    Args:
        fits_dir: folder of ``.npz`` fits.
        out: the ``.html`` path.
        renders_dir: PNGs from ``fit3d render`` (``<image path>.png``) to embed as thumbnails;
            else images from ``images_dir`` when given; else no thumbnails.
        thumbnails: how many people, the worst first, are shown with their image (each image
            embedded once, as a style every row of that image uses); the other rows link to
            their render PNG (a path relative to the page) when ``renders_dir`` holds one
            not older than the fit file (one older shows an earlier fit of the image).
    Returns:
        ``{"people": n, "fitted": n, "valid": n, "median_px": x, "unreadable": [files]}``.
    """
    rows = collect_people(fits_dir)
    err = np.array([r["reproj_error_px"] for r in rows if r["status"] == "fitted"], dtype=float)
    err = err[np.isfinite(err)]
    hist = base64.b64encode(histogram_png(err)).decode()
    out = Path(out)
    thumbs: dict[str, int] = {}  # image file -> its style's number (-1: none)
    styles = []
    e = html.escape
    body = []
    renders: dict[str, Path | None] = {}  # image file -> its render PNG (None: none), looked up once per image

    def render_of(file: str) -> Path | None:  # (a render older than its fit shows an earlier fit: not used)
        if file not in renders:
            png = Path(renders_dir) / f"{file}.png" if renders_dir is not None else None
            fit = Path(fits_dir) / f"{file}.npz"
            renders[file] = png if png is not None and png.is_file() and (
                not fit.is_file() or png.stat().st_mtime >= fit.stat().st_mtime) else None
        return renders[file]

    shown = 0  # rows with a thumbnail (an image neither rendered nor given has none)
    for n, r in enumerate(rows):
        rendered = render_of(r["file"])
        cell = ""
        if n < thumbnails and r["file"] not in thumbs:
            cand = rendered or (Path(images_dir) / r["image"] if images_dir is not None
                                and (Path(images_dir) / r["image"]).is_file() else None)
            thumbs[r["file"]] = -1
            if cand is not None and (thumb := _thumb(cand)):
                thumbs[r["file"]] = len(styles)
                url, (w, h) = thumb
                styles.append(f".t{len(styles)}{{background-image:url({url});width:{w}px;height:{h}px}}")
        if n < thumbnails and thumbs.get(r["file"], -1) >= 0:
            shown += 1
            cell = f'<div class="t t{thumbs[r["file"]]}"></div>'
        elif rendered is not None:  # (a link: the page stays small however large the run)
            link = Path(os.path.relpath(rendered.absolute(), out.absolute().parent)).as_posix()
            cell = f'<a href="{e(quote(link))}">render</a>'
        err_s = "" if not np.isfinite(r["reproj_error_px"]) else f"{r['reproj_error_px']:.2f}"
        cls = "ok" if r["valid"] else "bad"
        body.append(
            f'<tr class="{cls}"><td>{cell}</td><td>{e(r["image"])}</td><td>{r["annot_id"]}</td><td>{e(r["status"])}</td>'
            f'<td>{err_s}</td><td>{"yes" if r["valid"] else "no"}</td><td>{e(r["skip_reason"])}</td></tr>'
        )
    fitted = sum(r["status"] == "fitted" for r in rows)
    valid = sum(r["valid"] for r in rows)
    med = float(np.median(err)) if len(err) else float("nan")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fit3d report: {e(str(fits_dir))}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
tr.bad{{background:#fde8e8}}.t{{background-size:contain;background-repeat:no-repeat}}
{"".join(styles)}</style></head><body>
<h1>fit3d report</h1><p>{e(str(fits_dir))}: {len(rows)} people, {fitted} fitted, {valid} valid,
median reprojection error {med:.2f} px. Rows sorted worst first; {shown} of the first {min(thumbnails, len(rows))}
shown with their image.</p>
<img src="data:image/png;base64,{hist}" alt="histogram of reprojection errors">
<table><tr><th>render</th><th>image</th><th>annot_id</th><th>status</th><th>reproj. error (px)</th><th>valid</th><th>reason</th></tr>
{"".join(body)}</table></body></html>
"""
    atomic_write_bytes(out, page.encode())
    unreadable = [r["file"] for r in rows if r["status"] == "unreadable"]
    return dict(people=len(rows) - len(unreadable), fitted=fitted, valid=valid, median_px=med, unreadable=unreadable)
