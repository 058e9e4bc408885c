import numpy as np
import pytest
import torch

from fit3d.geometry import project
from fit3d.render import Renderer
from fit3d.render.fits import render_dir
from fit3d.render.report import collect_people, write_report


def _sphere(center, radius=0.02):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    return np.asarray(s.vertices) + center, np.asarray(s.faces)


@pytest.mark.parametrize("center", [(0.3, -0.2, 3.0), (-0.5, 0.4, 5.0), (0.0, 0.0, 2.0)])
def test_rendered_point_lands_on_projected_pixel(center):
    """The OpenCV-to-OpenGL conversion: a rendered blob is centred where project() puts its centre."""
    f, pp, size = np.array([900.0, 850.0]), np.array([300.0, 260.0]), (640, 480)
    r = Renderer()
    try:
        rgb, depth = r.render([_sphere(np.array(center))], size, f, pp)
    finally:
        r.close()
    ys, xs = np.nonzero(depth > 0)
    assert len(xs) > 10
    uv = project(torch.tensor([[center]], dtype=torch.float32), torch.tensor(f[None], dtype=torch.float32), torch.tensor(pp[None], dtype=torch.float32))[0, 0].numpy()
    # pixel (i, j) covers [j, j+1) x [i, i+1): its centre is at j + 0.5
    assert abs(xs.mean() + 0.5 - uv[0]) < 0.5 and abs(ys.mean() + 0.5 - uv[1]) < 0.5
    assert depth[depth > 0].min() == pytest.approx(center[2] - 0.02, abs=3e-3)


def test_people_fitted_with_other_intrinsics_are_drawn_where_their_camera_sees_them():
    """A trial: a SPIN file's per-person intrinsics; the overlay drew everyone with the first
    person's camera (the second man half-size, off to the left). A point moved by in_camera projects
    through the first camera where its own camera projected it, at the same depth."""
    from fit3d.render.fits import in_camera

    v = np.array([[0.3, -0.2, 3.0], [-0.5, 0.4, 5.0], [0.0, 0.0, 2.0]], np.float32)
    own_f, own_c, first_f, first_c = [600.0, 612.0], [250.0, 166.0], [1200.0, 1200.0], [320.0, 212.0]
    moved = in_camera(v, own_f, own_c, first_f, first_c)
    as_own = v[:, :2] / v[:, 2:] * own_f + own_c
    as_first = moved[:, :2] / moved[:, 2:] * first_f + first_c
    assert np.allclose(as_own, as_first, atol=1e-3) and np.array_equal(moved[:, 2], v[:, 2])
    assert in_camera(v, first_f, first_c, first_f, first_c) is v


def test_side_view_turns_about_the_vertical(anny_model):
    r = Renderer()
    try:
        pivot = np.array([0.0, 0.0, 3.0])
        near = _sphere(np.array([0.0, 0.0, 2.5]))  # in front of the pivot, on the optical axis
        img = r.side_view((200, 200), [near, _sphere(pivot)], pivot, np.array([200.0, 200.0]), np.array([100.0, 100.0]))
    finally:
        r.close()
    ys, xs = np.nonzero((img < 250).any(-1))
    # seen from the side, a point between camera and pivot lies beside the pivot, at its height
    assert xs.max() - xs.min() > 25 and ys.max() - ys.min() < 12


def test_side_view_backs_off_and_centres_until_people_spread_in_depth_are_all_in_view():
    """Two people 6 m apart in depth lie 3 m either side of the pivot in the side view: at the
    front camera's distance (5 m) both would fall outside a 200 px image."""
    from fit3d.render.overlay import side_framing

    f, pp, size = np.array([200.0, 200.0]), np.array([100.0, 100.0]), (200, 200)
    near, far = _sphere(np.array([0.0, 0.0, 2.0]), 0.1), _sphere(np.array([0.0, 0.0, 8.0]), 0.1)
    pivot = np.array([0.0, 0.0, 5.0])
    R = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # 90 degrees about the vertical
    k, centred = side_framing(np.concatenate([near[0], far[0]]), R, pivot, f, pp, size)
    assert k > 1 and np.allclose(centred, pp, atol=1.0)  # symmetric about the pivot: no shift
    k, shifted = side_framing(far[0], R, pivot, f, pp, size, closer=())  # one person beside the pivot:
    assert k == 1.0 and abs(shifted[0] - pp[0]) > 50 and abs(shifted[1] - pp[1]) < 1  # centred on it
    r = Renderer()
    try:
        img = r.side_view(size, [near, far], pivot, f, pp)
    finally:
        r.close()
    ys, xs = np.nonzero((img < 250).any(-1))
    assert xs.min() < 90 and xs.max() > 110  # a blob each side of the centre: both in view
    assert xs.min() > 0 and xs.max() < 199


def test_small_or_far_people_are_seen_from_closer_in_the_side_view():
    """A person that fills a sliver of the side view at the front camera's distance (a 20 px person
    in a 12-megapixel photo: 55 pixels of a 4000 x 3000 side view) is seen from closer, filling at
    most half of it; people that fill a quarter or more are framed as before."""
    from fit3d.render.overlay import side_framing

    f, pp, size = np.array([5000.0, 5000.0]), np.array([2000.0, 1500.0]), (4000, 3000)
    R = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    pivot = np.array([0.0, 0.0, 400.0])
    person = np.array([[0.0, -0.9, 400.0], [0.0, 0.85, 400.0], [0.0, 0.0, 399.8], [0.0, 0.0, 400.2]])
    k, centred = side_framing(person, R, pivot, f, pp, size)
    x = (person - (pivot + k * (R @ -pivot))) @ R
    uv = f * x[:, :2] / x[:, 2:] + centred
    height = uv[:, 1].max() - uv[:, 1].min()
    assert k < 0.05 and 0.2 * 3000 < height <= 0.5 * 3000
    assert np.allclose((uv.max(0) + uv.min(0)) / 2, np.array(size) / 2, atol=1.0)  # centred
    near = person + np.array([0.0, 0.0, 3.0 - 400.0])  # the same person 3 m away fills the view
    assert side_framing(near, R, np.array([0.0, 0.0, 3.0]), f, pp, size)[0] >= 1.0


def test_far_people_are_rendered_and_the_clip_range_holds_them():
    """A person 2.5 km away (a telephoto focal length) is drawn: the far plane was 1 km."""
    from fit3d.render.overlay import clip_range

    f, pp, size = np.array([40000.0, 40000.0]), np.array([320.0, 240.0]), (640, 480)
    r = Renderer()
    try:
        rgb, depth = r.render([_sphere(np.array([0.0, 0.0, 2500.0]), radius=1.0)], size, f, pp)
    finally:
        r.close()
    assert (depth > 0).sum() > 100 and depth[depth > 0].min() == pytest.approx(2499.0, rel=1e-3)
    near, far = clip_range([_sphere(np.array([0.0, 0.0, 3.0]), 0.5)], np.eye(4) @ np.diag([1.0, -1, -1, 1]))
    assert near == pytest.approx(1.25) and far == 1000.0


def test_render_dir_and_report_on_a_small_run(tmp_path, sample_dir, anny_model):
    from fit3d.data.readers import read_coco
    from fit3d.fitters import SMPLify, Stage
    from fit3d.pipeline import RunConfig, run

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    sched = [Stage("camera", ("global_orient", "transl"), 10, 0.05, dict(reprojection=1.0, depth=100.0), keypoints="torso")]
    fits = tmp_path / "fits"
    run(images[:2], SMPLify(anny_model, schedule=sched), anny_model, RunConfig(fits, progress=False))
    st = render_dir(fits, sample_dir, tmp_path / "render", anny_model, keypoints=True, save_mesh="ply", progress=False)
    assert st["images"] == 2 and not st["errors"]
    from PIL import Image

    for img in images[:2]:
        png = tmp_path / "render" / (img.image_key + ".png")  # mirrors the image's relative path
        w, h = Image.open(png).size
        assert (w, h) == (2 * img.image_size[0], img.image_size[1])
        assert len(list((tmp_path / "render").glob(img.image_key + "_*.ply"))) == \
            sum(p.num_visible >= 6 for p in img.people)  # one mesh per fitted person
    out = tmp_path / "report.html"
    s = write_report(fits, out, renders_dir=tmp_path / "render")
    page = out.read_text()
    rows = collect_people(fits)
    assert s["people"] == len(rows) == sum(len(i.people) for i in images[:2])
    for r in rows:
        assert f"<td>{r['annot_id']}</td>" in page
    errs = [r["reproj_error_px"] for r in rows if r["status"] == "fitted"]
    assert errs == sorted(errs, reverse=True)  # worst first
    assert "data:image/png;base64" in page and "data:image/jpeg;base64" in page
    # an unreadable and a missing image: rendered on grey, each with its reason (the unreadable one an
    # error: exit 3), and the report still works
    broken = tmp_path / "broken_images"
    broken.mkdir()
    (broken / images[0].image_key).write_bytes(b"not an image")
    st = render_dir(fits, broken, tmp_path / "render2", anny_model, progress=False)
    assert st["images"] == 2
    assert [m.split(" (", 1)[1] for m in st["missing_images"]] == ["image not found)"]
    assert len(st["errors"]) == 1 and st["errors"][0]["reason"].startswith("unreadable image")
    assert write_report(fits, tmp_path / "r2.html", images_dir=broken)["people"] == len(rows)
    # another picture under the image's name (another size): its fits would be drawn out of place
    other = tmp_path / "other_images"
    other.mkdir()
    for img in images[:2]:
        with Image.open(img.image_path) as im:
            im.resize((im.size[0] * 2, im.size[1] * 2)).save(other / img.image_key)
    st = render_dir(fits, other, tmp_path / "render3", anny_model, progress=False, side=False)
    assert st["images"] == 2 and len(st["errors"]) == 2
    assert "its fits were made on a" in st["errors"][0]["reason"]
    assert Image.open(tmp_path / "render3" / (images[0].image_key + ".png")).size == tuple(images[0].image_size)


def test_render_command_builds_the_model_the_fits_were_made_with(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import fit3d.body_models
    import fit3d.data.writers
    from fit3d.cli.main import cli

    fits = tmp_path / "fits"
    fits.mkdir()
    (fits / "fit_settings.json").write_text(json.dumps(dict(fitter="eft", model="smpl", model_path="/models/smpl",
                                                            gender="female")))
    monkeypatch.setattr(fit3d.data.writers, "fit_files", lambda d: [d / "a.jpg.npz"])
    monkeypatch.setattr(fit3d.data.writers, "read_fit", lambda f: {"model": "smpl"})
    built = []

    def build(name, path=None, gender="neutral", device="cpu"):
        built.append((name, str(path), gender))
        raise ValueError("stop here")

    monkeypatch.setattr(fit3d.body_models, "build_body_model", build)
    args = ["render", "--fits", str(fits), "--images", str(tmp_path), "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "stop here" in r.output
    r = CliRunner().invoke(cli, args + ["--model-path", "/other/smpl", "--gender", "male"])  # given options win
    assert built == [("smpl", "/models/smpl", "female"), ("smpl", "/other/smpl", "male")]
    # the recorded gender is read as the exports read it (fitted_gender): case-blind, SMPL family only
    for fitted, recorded, expected in (("smpl", "Female", "female"), ("smpl", "other", "neutral"),
                                       ("anny", "male", "neutral")):
        (fits / "fit_settings.json").write_text(json.dumps(dict(fitter="eft", model=fitted, gender=recorded)))
        monkeypatch.setattr(fit3d.data.writers, "read_fit", lambda f, m=fitted: {"model": m})
        built.clear()
        CliRunner().invoke(cli, args)
        assert built and built[0][0] == fitted and built[0][2] == expected, (fitted, recorded, built)
    r = CliRunner().invoke(cli, args + ["--gender", "male"])  # anny's fits: SMPL-family options are a usage error
    assert r.exit_code == 2 and "for the SMPL family" in r.output and "are of anny" in r.output


def test_render_of_a_folder_whose_fits_are_all_unreadable_names_them_and_exits_3(tmp_path):
    """Found by a trial: some unreadable fits exit 3 (README), all unreadable exited 1."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    fits = tmp_path / "fits"
    fits.mkdir()
    (fits / "a.jpg.npz").write_bytes(b"cut")
    r = CliRunner().invoke(cli, ["render", "--fits", str(fits), "--images", str(tmp_path), "--out", str(tmp_path / "r")])
    assert r.exit_code == 3 and "unreadable fit" in r.output and "a.jpg.npz" in r.output, r.output


def test_large_and_16_bit_images_are_drawn_as_they_look(tmp_path):
    from PIL import Image

    from fit3d.render.fits import load_image, scaled_fit

    for top in (65535, 4095):  # 16-bit and 12-bit greyscale in a 16-bit file: convert("RGB") clipped them
        grey16 = (np.linspace(0, top, 300 * 200).reshape(200, 300)).astype(np.uint16)
        Image.fromarray(grey16).save(tmp_path / "deep.png")
        pixels, problem, scale = load_image(tmp_path / "deep.png", (300, 200))
        assert problem == "" and scale == 1.0 and pixels.shape == (200, 300, 3)
        assert abs(pixels.mean() - 127.5) < 2 and pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    # a PNG's orientation after its image data is not read by the fitting commands: nor by render
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "late.png", exif=exif.tobytes())
    data = (tmp_path / "late.png").read_bytes()
    assert data.index(b"eXIf") < data.index(b"IDAT")  # (Pillow writes it first: move it after the image data)
    chunks, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        chunks.append(data[pos:pos + 12 + n])
        pos += 12 + n
    ex = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c is not ex]
    (tmp_path / "late.png").write_bytes(data[:8] + b"".join(rest[:-1]) + ex + rest[-1])
    late = (tmp_path / "late.png").read_bytes()
    assert late.index(b"eXIf") > late.index(b"IDAT")
    from fit3d.data.images import inspect_image

    assert inspect_image(tmp_path / "late.png").size == (40, 20)
    assert load_image(tmp_path / "late.png", (40, 20))[1] == ""
    # a file cut short: drawn as far as it decodes, with a note (its people were fitted with a warning)
    Image.effect_noise((300, 200), 40).convert("RGB").save(tmp_path / "whole.jpg", quality=90)
    jpg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    pixels, problem, scale = load_image(tmp_path / "cut.jpg", (300, 200))
    assert "cut short" in problem and pixels.shape == (200, 300, 3) and pixels[:20].std() > 5
    Image.new("RGB", (5000, 2000), (10, 200, 30)).save(tmp_path / "big.jpg")
    pixels, problem, scale = load_image(tmp_path / "big.jpg", (5000, 2000), max_side=1000)
    assert problem == "" and scale == pytest.approx(0.2) and pixels.shape == (400, 1000, 3)
    fit = dict(keypoints_2d=np.array([[[99.5, 49.5, 1.0]]]), keypoints_2d_fit=np.array([[[4999.5, 1999.5]]]),
               focal_length=np.array([[5385.0, 5385.0]]), principal_point=np.array([[2499.5, 999.5]]),
               image_size=np.array([5000, 2000]))
    small = scaled_fit(fit, scale)  # continuous pixel coordinates (edges on whole numbers): scaled as they are
    np.testing.assert_allclose(small["keypoints_2d"][0, 0], [19.9, 9.9, 1.0])
    np.testing.assert_allclose(small["keypoints_2d_fit"][0, 0], [999.9, 399.9])
    np.testing.assert_allclose(small["principal_point"][0], [499.9, 199.9])
    np.testing.assert_allclose(small["focal_length"][0], [1077.0, 1077.0])
    assert list(small["image_size"]) == [1000, 400] and scaled_fit(fit, 1.0) is fit


def test_report_embeds_each_image_once_and_links_the_rest(tmp_path, sample_dir):
    """Found by a scale trial: every person's row embedded its image's thumbnail again (2,000 fits:
    a 363 MB page, 1.3 GB of memory; COCO train would be ~11 GB), and every image was decoded."""
    import re

    from click.testing import CliRunner
    from PIL import Image

    from fit3d.cli.main import cli
    from fit3d.data.writers import write_npz
    from fit3d.render.report import REPORT_THUMBNAILS

    fits, renders = tmp_path / "fits", tmp_path / "fits" / "render"
    renders.mkdir(parents=True)
    for k in range(5):  # 5 images of 3 people each
        name = f"im{k}.jpg"
        write_npz(fits / f"{name}.npz", dict(
            image=np.array(name), fitter=np.array("smplify"), annot_id=np.arange(3) + 10 * k,
            status=np.array(["fitted"] * 3), reproj_error_px=np.array([1.0, 2.0, 3.0]) + k,
            valid=np.ones(3, bool), skip_reason=np.array([""] * 3)))
        Image.new("RGB", (80, 40), (k * 40, 0, 0)).save(renders / f"{name}.png")
    out = tmp_path / "report.html"
    assert write_report(fits, out, renders_dir=renders, thumbnails=6)["people"] == 15
    page = out.read_text()
    assert page.count("data:image/jpeg;base64") == 3  # the worst 6 people are of 3 images: each embedded once
    assert len(re.findall(r'<div class="t t\d+">', page)) == 6
    assert page.count('<a href="fits/render/') == 15 - 6  # the others link to their render
    assert "6 of the first 6\nshown with their image" in page
    r = CliRunner().invoke(cli, ["report", "--fits", str(fits), "--out", str(tmp_path / "all.html"),
                                 "--thumbnails", "100"])
    assert r.exit_code == 0 and (tmp_path / "all.html").read_text().count("data:image/jpeg;base64") == 5
    assert f"[default: {REPORT_THUMBNAILS}]" in CliRunner().invoke(cli, ["report", "--help"]).output
    (renders / "im4.jpg.png").unlink()  # (a trial: the page claimed thumbnails an unrendered image lacks)
    write_report(fits, out, renders_dir=renders, thumbnails=6)
    assert "3 of the first 6\nshown with their image" in out.read_text()  # im4's 3 people, the worst, have none


def test_rendering_named_images_opens_only_their_fits(tmp_path, monkeypatch):
    """A review: a job's --render still read every fit of the folder (other shards' too) before
    keeping its own; an unreadable fit of another shard made every task exit 3."""
    import fit3d.render.fits as fits_module
    from fit3d.data.writers import output_path, write_npz

    fits = tmp_path / "fits"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_npz(output_path(fits, name), dict(image=np.array(name)))
    output_path(fits, "c.jpg").write_bytes(b"")  # another shard's damaged fit
    opened = []
    monkeypatch.setattr(fits_module, "save_meshes", lambda *a, **k: [])
    assert fits_module._named_fit_files(fits, ["b.jpg", "a.jpg", "x.jpg"]) == [output_path(fits, "a.jpg"),
                                                                               output_path(fits, "b.jpg")]
    monkeypatch.setattr(fits_module, "read_render_fit", lambda f: opened.append(f.name) or dict(image=np.array(f.name[:-4])))
    fits_module.save_meshes_dir(fits, tmp_path / "m", None, names=["a.jpg"])
    assert opened == ["a.jpg.npz"]


def _fake_fits(fits, errors: dict) -> None:
    """One fit file per image of ``errors`` (image -> one error per person; None: a person skipped)."""
    from fit3d.data.writers import output_path, write_npz

    for image, errs in errors.items():
        write_npz(output_path(fits, image), dict(
            image=np.array(image), fitter=np.array("eft"), model=np.array("anny"),
            annot_id=np.arange(len(errs)), status=np.array(["skipped" if e is None else "fitted" for e in errs]),
            reproj_error_px=np.array([np.nan if e is None else e for e in errs], dtype=float),
            valid=np.array([e is not None and e < 10 for e in errs]), skip_reason=np.array(["" for _ in errs])))


def test_the_worst_a_sample_and_a_list_of_images_are_chosen_to_render(tmp_path):
    from fit3d.render.selection import listed_images, sample_images, worst_images

    fits = tmp_path / "fits"
    _fake_fits(fits, {"a.jpg": [3.0, 40.0], "sub/b.jpg": [12.0], "c.jpg": [None], "d.jpg": [1.0, 20.0]})
    # worst people first, each image once; skipped people never count
    assert worst_images(fits, 1) == ["a.jpg"]
    assert worst_images(fits, 3) == ["a.jpg", "d.jpg", "sub/b.jpg"]
    assert worst_images(fits, 10) == ["a.jpg", "d.jpg", "sub/b.jpg"]
    all_images = ["a.jpg", "c.jpg", "d.jpg", "sub/b.jpg"]
    assert sample_images(fits, 10) == all_images
    drawn = sample_images(fits, 2, seed=3)
    assert len(drawn) == 2 and set(drawn) <= set(all_images) and drawn == sample_images(fits, 2, seed=3)
    assert len({tuple(sample_images(fits, 2, seed=s)) for s in range(20)}) > 1  # the seed draws
    (tmp_path / "list.txt").write_text("# review\n sub/b.jpg \n\na.jpg\nsub/b.jpg\n")
    assert listed_images(tmp_path / "list.txt") == ["sub/b.jpg", "a.jpg"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="names no image"):
        listed_images(tmp_path / "empty.txt")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a list")  # (the codec's words alone before)
    with pytest.raises(ValueError, match="a.jpg is not a text file listing image paths"):
        listed_images(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=">= 1"):
        worst_images(fits, 0)


def test_render_command_renders_only_the_chosen_images(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import fit3d.cli.render as render_cli
    from fit3d.cli.main import cli

    fits = tmp_path / "fits"
    _fake_fits(fits, {"a.jpg": [3.0, 40.0], "sub/b.jpg": [12.0], "c.jpg": [None], "d.jpg": [1.0, 20.0]})
    asked = []
    monkeypatch.setattr(render_cli, "render_fits", lambda *a, **k: asked.append(a[7]) or 0)
    base = ["render", "--fits", str(fits), "--images", str(tmp_path), "--out", str(tmp_path / "r")]
    (tmp_path / "list.txt").write_text("c.jpg\nx.jpg\n")
    r = CliRunner().invoke(cli, base + ["--worst", "1", "--only", str(tmp_path / "list.txt")])
    assert r.exit_code == 0, r.output
    assert asked[-1] == ["a.jpg", "c.jpg"]
    assert "x.jpg (listed in" in r.output and "rendering 2 of 4 images" in r.output
    r = CliRunner().invoke(cli, base + ["--sample", "2", "--seed", "5"])
    assert r.exit_code == 0 and len(asked[-1]) == 2
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0 and asked[-1] is None  # all of them
    (tmp_path / "none.txt").write_text("x.jpg\n")
    r = CliRunner().invoke(cli, base + ["--only", str(tmp_path / "none.txt")])
    assert r.exit_code == 1 and "no image to render" in r.output
    r = CliRunner().invoke(cli, base + ["--worst", "0"])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, base + ["--worst", "1", "--seed", "3"])
    assert r.exit_code == 0 and "--seed is the seed of --sample" in r.output
    (tmp_path / "absolute.txt").write_text(f"{tmp_path / 'sub' / 'b.jpg'}\n")  # absolute paths under --images
    r = CliRunner().invoke(cli, base + ["--only", str(tmp_path / "absolute.txt")])
    assert r.exit_code == 0 and asked[-1] == ["sub/b.jpg"], r.output


def test_a_review_count_must_be_a_whole_number(tmp_path):
    """A Python user's trial: worst_images(d, 2.5) returned every image."""
    from fit3d.render.selection import sample_images, worst_images

    fits = tmp_path / "fits"
    _fake_fits(fits, {"a.jpg": [3.0], "b.jpg": [4.0], "c.jpg": [5.0]})
    for bad in (2.5, True, "2", 0):
        with pytest.raises(ValueError, match="whole number >= 1"):
            worst_images(fits, bad)
        with pytest.raises(ValueError, match="whole number >= 1"):
            sample_images(fits, bad)
    assert worst_images(fits, np.int64(2)) == ["c.jpg", "b.jpg"]


def test_importing_render_changes_no_environment_and_rendering_chooses_egl():
    """Only rendering sets ``PYOPENGL_PLATFORM`` (to EGL, when the user chose none): importing
    :mod:`fit3d.render` for its camera helpers leaves the environment alone."""
    import os
    import subprocess
    import sys

    code = ("import os, sys\nimport fit3d.render\nfrom fit3d.render import overlay\n"
            "before = os.environ.get('PYOPENGL_PLATFORM')\n"
            "sys.modules['pyrender'] = type(sys)('pyrender')  # (a stand-in: no OpenGL needed)\n"
            "overlay._pyrender()\nprint(before, os.environ.get('PYOPENGL_PLATFORM'))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "egl"]
    env["PYOPENGL_PLATFORM"] = "osmesa"  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["osmesa", "osmesa"], out.stderr


def test_a_pyrender_that_cannot_be_imported_is_a_render_error(monkeypatch):
    # found by a design review: render() imported pyrender before the guarded context creation,
    # so a machine without it got an ImportError the render command does not report
    from fit3d.render import overlay

    def missing():
        raise ImportError("no pyrender here")

    monkeypatch.setattr(overlay, "_pyrender", missing)
    with pytest.raises(overlay.RenderError, match="no pyrender here"):
        overlay.Renderer().render([(np.zeros((3, 3)), np.array([[0, 1, 2]]))], (8, 8), np.array([10.0, 10.0]),
                                  np.array([4.0, 4.0]))


def test_keypoint_markers_of_a_small_person_do_not_hide_it():
    """Markers are a 150th of the image (20 px on 3000 px) but at most a 25th of the person's
    extent: a 40 px person's 17 points are drawn as 2 px marks, not 20 px discs over the body."""
    from fit3d.render.overlay import draw_keypoints

    image = np.zeros((3000, 3000, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    kp = np.concatenate([1500 + rng.uniform(0, [12, 40], (17, 2)), np.ones((17, 1))], 1)
    drawn = (draw_keypoints(image, kp, kp[:, :2]) > 0).any(-1)
    ys, xs = np.nonzero(drawn)
    assert xs.max() - xs.min() < 12 + 8 and ys.max() - ys.min() < 40 + 8
    big = kp.copy()
    big[:, :2] = 500 + (kp[:, :2] - 1500) * 50  # a 2000 px person
    ys, xs = np.nonzero((draw_keypoints(image, big, None) > 0).any(-1))
    assert ys.max() - ys.min() > np.ptp(big[:, 1]) + 30  # 20 px discs each end


def test_an_image_folder_that_does_not_exist_is_a_usage_error(tmp_path):
    """A trial: render --images /nope drew every fit on grey, exit 0 (a typo is not a missing image)."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    (tmp_path / "fits").mkdir()
    for args in (["render", "--out", str(tmp_path / "r")], ["report", "--out", str(tmp_path / "r.html")]):
        r = CliRunner().invoke(cli, [*args, "--fits", str(tmp_path / "fits"), "--images", str(tmp_path / "nope")])
        assert r.exit_code == 2 and "does not exist" in r.output, r.output


def _marked(w: int = 50, h: int = 30):
    """An RGB image with a white square at its top-left corner (where it is shows how it was turned)."""
    from PIL import Image

    a = np.zeros((h, w, 3), np.uint8)
    a[:5, :5] = 255
    return Image.fromarray(a)


def test_turned_tiffs_are_turned_once_and_cut_short_turned_photos_are_drawn(tmp_path):
    """A review: Pillow opens a TIFF at its shown size and turns it as it decodes it, and fit3d turned
    it again (its size as shown swapped, its pixels upside down); a cut-short JPEG with an EXIF
    orientation was turned before the retry that decodes what is there, so it was drawn on grey."""
    from PIL import Image, ImageOps

    from fit3d.data.images import inspect_image
    from fit3d.render.fits import TRUNCATED_NOTE, load_image
    from fit3d.render.report import _thumb

    for o in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = o
        for ext in ("jpg", "tif", "png"):
            path = tmp_path / f"o{o}.{ext}"
            _marked().save(path, exif=exif.tobytes()) if ext != "tif" else _marked().save(path, tiffinfo={274: o})
            with Image.open(path) as im:
                want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            size = inspect_image(path).size
            assert size == (want.shape[1], want.shape[0]), (o, ext)
            pixels, problem, _ = load_image(path, size)
            assert problem == "" and np.array_equal(pixels, want), (o, ext)
            assert _thumb(path)[1] == size
    big = Image.effect_noise((300, 200), 40).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    big.save(tmp_path / "whole.jpg", quality=90, exif=exif.tobytes())
    jpg = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    pixels, problem, _ = load_image(tmp_path / "cut.jpg", (200, 300))  # (shown a quarter turned)
    assert problem == TRUNCATED_NOTE and pixels.shape == (300, 200, 3) and pixels.std() > 5


def test_report_thumbnails_of_16_bit_images_and_links_to_renders_of_any_name(tmp_path):
    from PIL import Image

    from fit3d.render.report import _thumb

    grey16 = (np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    url, size = _thumb(tmp_path / "deep.png")
    import base64
    import io

    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert size == (300, 200) and 100 < thumb.mean() < 155  # (convert("RGB") made it all white)
    fits, renders = tmp_path / "fits", tmp_path / "renders"
    _fake_fits(fits, {"a#1.jpg": [3.0], "q?.jpg": [2.0], "50%.jpg": [1.0]})
    for name in ("a#1.jpg", "q?.jpg", "50%.jpg"):
        renders.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(renders / f"{name}.png")
    page = (tmp_path / "r.html")
    write_report(fits, page, renders_dir=renders, thumbnails=0)
    from urllib.parse import unquote, urljoin

    links = [unquote(urljoin("file:///x/", h)) for h in
             __import__("re").findall(r'href="([^"]+)"', page.read_text().replace("&amp;", "&"))]
    assert sorted(links) == sorted(f"file:///x/renders/{n}.png" for n in ("a#1.jpg", "q?.jpg", "50%.jpg"))
    import os

    old = (renders / "q?.jpg.png").stat().st_mtime - 60  # rendered before the image was fitted again
    os.utime(renders / "q?.jpg.png", (old, old))
    write_report(fits, page, renders_dir=renders, thumbnails=0)
    assert page.read_text().count("render</a>") == 2 and "q%3F" not in page.read_text()


def test_render_skips_npz_that_are_no_fits_and_names_renders_and_selections_by_fit_file(tmp_path, sample_dir,
                                                                                        anny_model):
    """A review: a readable .npz that is no fit stopped `fit3d render` with a KeyError; a fit file
    copied into a subfolder was a review set of nothing (--sample, exit 0) or unreadable (--worst)."""
    import shutil

    from fit3d.data.readers import read_coco
    from fit3d.data.writers import output_path, write_npz
    from fit3d.fitters import SMPLify, Stage
    from fit3d.pipeline import RunConfig, run
    from fit3d.render.fits import save_meshes_dir
    from fit3d.render.selection import sample_images, worst_images

    images, _ = read_coco(sample_dir / "test_coco.json", sample_dir)
    sched = [Stage("camera", ("global_orient", "transl"), 5, 0.05, dict(reprojection=1.0, depth=100.0), keypoints="torso")]
    fits = tmp_path / "fits"
    crowd = max(images, key=lambda im: sum(p.num_visible >= 6 for p in im.people))  # (several people)
    run([crowd], SMPLify(anny_model, schedule=sched), anny_model, RunConfig(fits, progress=False))
    key = crowd.image_key
    write_npz(output_path(fits, "000.jpg"), dict(x=np.zeros(3)))  # (sorted first)
    st = render_dir(fits, sample_dir, tmp_path / "r1", anny_model, side=False, progress=False)
    assert st["images"] == 1 and len(st["errors"]) == 1 and "not a fit file" in st["errors"][0]["reason"]
    output_path(fits, "000.jpg").unlink()
    (fits / "sub").mkdir()
    shutil.move(output_path(fits, key), fits / "sub" / f"{key}.npz")
    for names in (sample_images(fits, 1), worst_images(fits, 1)):
        assert names == [f"sub/{key}"]
        st = render_dir(fits, sample_dir, tmp_path / "r2", anny_model, side=False, names=names, progress=False)
        assert st["images"] == 1 and not st["errors"] and (tmp_path / "r2" / "sub" / f"{key}.png").is_file()
    # two people of one image under one annotation id: two meshes, neither written over the other
    fit_path = fits / "sub" / f"{key}.npz"
    with np.load(fit_path) as z:
        fit = {k: z[k] for k in z.files}
    assert (fit["status"] == "fitted").sum() >= 2
    fit["annot_id"] = np.full_like(fit["annot_id"], 7)
    write_npz(fit_path, fit)
    n = save_meshes_dir(fits, tmp_path / "m", anny_model)
    assert n == (fit["status"] == "fitted").sum() == len(list((tmp_path / "m" / "sub").glob(f"{key}_7_*.obj")))


def test_a_listed_image_given_by_its_absolute_path_through_a_link_keeps_the_link_name(tmp_path):
    from fit3d.render.selection import listed_images

    (tmp_path / "store").mkdir()
    (tmp_path / "imgs").mkdir()
    (tmp_path / "store" / "a.jpg").write_bytes(b"x")
    (tmp_path / "imgs" / "b.jpg").symlink_to(tmp_path / "store" / "a.jpg")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'imgs' / 'b.jpg'}\n")
    assert listed_images(tmp_path / "list.txt", tmp_path / "imgs") == ["b.jpg"]  # (was the absolute path)
