"""A self-contained HTML page to review a run: every person, worst reprojection error first."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from fit3d.data.writers import atomic_write_bytes, read_fit, require_fit_files


def collect_people(fits_dir: str | Path) -> list[dict]:
    """One row per person of every ``.npz`` in ``fits_dir``: image, annot_id, status,
    reproj_error_px, valid, skip_reason; sorted worst first (skipped people last).

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
        for i in range(n):
            rows.append(dict(
                file=str(d["image"]), image=str(d["image"]), annot_id=int(d["annot_id"][i]), status=str(d["status"][i]),
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


def _thumb(path: Path, width: int = 360) -> str:
    """A JPEG data URL of the image, or "" when it cannot be read (the row shows no picture)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")  # as shown, the frame of the fits
            im.thumbnail((width * 2, width))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def write_report(fits_dir: str | Path, out: str | Path, renders_dir: str | Path | None = None,
                 images_dir: str | Path | None = None) -> dict:
    """Write the HTML report.

    Args:
        fits_dir: folder of ``.npz`` fits.
        out: the ``.html`` path.
        renders_dir: PNGs from ``fit3d render`` (``<image path>.png``) to embed as thumbnails;
            else images from ``images_dir`` when given; else no thumbnails.
    Returns:
        ``{"people": n, "fitted": n, "valid": n, "median_px": x}``.
    """
    rows = collect_people(fits_dir)
    err = np.array([r["reproj_error_px"] for r in rows if r["status"] == "fitted"], dtype=float)
    err = err[np.isfinite(err)]
    hist = base64.b64encode(histogram_png(err)).decode()
    thumbs: dict[str, str] = {}
    for r in rows:
        if r["file"] in thumbs:
            continue
        cand = None
        if renders_dir is not None and (Path(renders_dir) / f"{r['file']}.png").is_file():
            cand = Path(renders_dir) / f"{r['file']}.png"
        elif images_dir is not None and (Path(images_dir) / r["image"]).is_file():
            cand = Path(images_dir) / r["image"]
        thumbs[r["file"]] = _thumb(cand) if cand else ""
    e = html.escape
    body = []
    for r in rows:
        src = thumbs.get(r["file"], "")
        img = f'<img src="{src}" loading="lazy">' if src else ""
        err_s = "" if not np.isfinite(r["reproj_error_px"]) else f"{r['reproj_error_px']:.2f}"
        cls = "ok" if r["valid"] else "bad"
        body.append(
            f'<tr class="{cls}"><td>{img}</td><td>{e(r["image"])}</td><td>{r["annot_id"]}</td><td>{e(r["status"])}</td>'
            f'<td>{err_s}</td><td>{"yes" if r["valid"] else "no"}</td><td>{e(r["skip_reason"])}</td></tr>'
        )
    fitted = sum(r["status"] == "fitted" for r in rows)
    valid = sum(r["valid"] for r in rows)
    med = float(np.median(err)) if len(err) else float("nan")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fit3d report: {e(str(fits_dir))}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
tr.bad{{background:#fde8e8}}img{{max-width:360px}}</style></head><body>
<h1>fit3d report</h1><p>{e(str(fits_dir))}: {len(rows)} people, {fitted} fitted, {valid} valid,
median reprojection error {med:.2f} px. Rows sorted worst first.</p>
<img src="data:image/png;base64,{hist}" alt="histogram of reprojection errors">
<table><tr><th>render</th><th>image</th><th>annot_id</th><th>status</th><th>reproj. error (px)</th><th>valid</th><th>reason</th></tr>
{"".join(body)}</table></body></html>
"""
    atomic_write_bytes(out, page.encode())
    unreadable = [r["file"] for r in rows if r["status"] == "unreadable"]
    return dict(people=len(rows) - len(unreadable), fitted=fitted, valid=valid, median_px=med, unreadable=unreadable)
