import json
import shutil
import warnings

import numpy as np
import pytest

from fit3d.data.coco import read_coco


def test_a_truncated_image_is_read_with_a_warning(tmp_path, sample_dir):
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path)
    data = (sample_dir / "000000040083.jpg").read_bytes()
    (tmp_path / "000000040083.jpg").write_bytes(data[:20000])  # an interrupted copy: the header still reads
    # a complete image followed by other data (a phone's motion photo): decoded to be sure, not reported
    (tmp_path / "000000196141.jpg").write_bytes((sample_dir / "000000196141.jpg").read_bytes() + bytes(8192))
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    cut = [p for p in problems if "cut short" in p.reason]
    assert len(cut) == 1 and cut[0].severity == "warning" and cut[0].source.endswith("000000040083.jpg")
    assert {r.image_key for r in images} == {"000000000785.jpg", "000000040083.jpg", "000000196141.jpg"}


def test_a_truncated_png_is_read_with_a_warning_and_never_decoded_for_its_exif(tmp_path, monkeypatch):
    """Found by a trial: Pillow's getexif decodes a whole PNG, so a cut-short PNG was an error (exit 3,
    its people not fitted) and every PNG was decoded while the inputs were read."""
    from PIL import Image, PngImagePlugin

    from fit3d.data.images import inspect_image

    Image.effect_noise((400, 300), 60).convert("RGB").save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    loads = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1) or real(self))
    assert inspect_image(tmp_path / "a.png") == ((400, 300), "PNG", False, 1) and not loads
    assert inspect_image(tmp_path / "cut.png").truncated  # (decoded once, to tell: no end marker)


def test_a_truncated_bmp_is_found_by_its_declared_length_and_a_truncated_webp_does_not_open(tmp_path):
    """Left out before: only JPEG and PNG (end markers) were checked, so a cut-short BMP was
    fitted without a word and training code could not decode it."""
    from PIL import Image

    from fit3d.data.images import inspect_image

    for fmt in ("BMP", "WEBP"):
        path = tmp_path / f"a.{fmt.lower()}"
        Image.effect_noise((401, 300), 60).convert("RGB").save(path, fmt)
        data = path.read_bytes()
        assert inspect_image(path) == ((401, 300), fmt, False, 1)
        (tmp_path / "long").write_bytes(data + bytes(100))  # a complete file with data after it: not cut
        assert not inspect_image(tmp_path / "long").truncated
        (tmp_path / "cut").write_bytes(data[: len(data) - 100])
        if fmt == "BMP":
            assert inspect_image(tmp_path / "cut").truncated
        else:  # an error, not a warning: its people are not fitted
            with pytest.raises(OSError):
                inspect_image(tmp_path / "cut")


def test_an_image_stored_turned_warns_unless_its_annotations_saw_it_as_shown(tmp_path, sample_dir):
    """Found by a trial: keypoints labelled on the stored pixels of an image with an EXIF orientation
    were fitted in the frame as shown, valid, exit 0, without a word."""
    from PIL import Image

    d = json.loads((sample_dir / "test_coco.json").read_text())
    name = "000000000785.jpg"
    entry = next(i for i in d["images"] if i["file_name"] == name)
    d["images"] = [entry]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == entry["id"]]
    with Image.open(sample_dir / name) as im:
        w, h = im.size
        for orientation, pixels in ((3, im.transpose(Image.Transpose.ROTATE_180)),
                                    (6, im.transpose(Image.Transpose.ROTATE_90))):
            folder = tmp_path / str(orientation)
            folder.mkdir()
            exif = Image.Exif()
            exif[0x0112] = orientation
            pixels.save(folder / name, exif=exif)
    (tmp_path / "ann.json").write_text(json.dumps(d))
    _, problems = read_coco(tmp_path / "ann.json", tmp_path / "3")  # same size either way: the frame is unknown
    assert [p.severity for p in problems] == ["warning"] and "EXIF orientation 3" in problems[0].reason
    entry.update(width=h, height=w)  # the annotations give the stored size of the quarter-turned file
    (tmp_path / "ann.json").write_text(json.dumps(d))
    _, problems = read_coco(tmp_path / "ann.json", tmp_path / "6")
    assert len(problems) == 1 and "annotations give the stored size" in problems[0].reason
    entry.update(width=w, height=h)  # the size as shown: the annotator saw it as shown (no warning)
    (tmp_path / "ann.json").write_text(json.dumps(d))
    assert read_coco(tmp_path / "ann.json", tmp_path / "6")[1] == []


def test_an_image_turned_by_its_exif_orientation_is_read_as_shown(tmp_path, sample_dir):
    from PIL import Image

    from fit3d.render.fits import load_image

    for f in sample_dir.glob("*.jpg"):
        shutil.copy(f, tmp_path)
    name = "000000000785.jpg"
    with Image.open(sample_dir / name) as im:
        shown = np.asarray(im.convert("RGB"))
        exif = Image.Exif()
        exif[0x0112] = 6  # "turn 90 degrees clockwise to show": stored a quarter turn the other way
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / name, exif=exif, quality=95)
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    turned = next(r for r in images if r.image_key == name)
    assert tuple(turned.image_size) == (shown.shape[1], shown.shape[0])  # width x height as shown
    assert not [p for p in problems if name in p.source]  # the annotations' size agrees: no warning
    pixels, problem, scale = load_image(tmp_path / name, turned.image_size)
    assert problem == "" and pixels.shape == shown.shape and scale == 1.0
    assert np.abs(pixels.astype(int) - shown).mean() < 4  # the same picture (JPEG re-encoded)


def test_an_image_too_large_for_pillow_is_an_input_error_and_the_rest_is_read(tmp_path, sample_dir, monkeypatch):
    """Found by a helper: Pillow's DecompressionBombError is no OSError, so one huge image stopped the run."""
    from PIL import Image

    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(sample_dir / name, tmp_path)
    with Image.open(tmp_path / "000000040083.jpg") as im:
        im.resize((200, 150)).save(tmp_path / "000000000785.jpg")  # small enough
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 80_000)  # 640x427 > 2x the limit: refused as a bomb
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # 200x150 < 2x: read, Pillow's warning not passed on
        images, problems = read_coco(sample_dir / "test_coco.json", tmp_path)
    big = [p for p in problems if "too large" in p.reason]
    assert len(big) == 1 and big[0].severity == "error" and big[0].source.endswith("000000040083.jpg")
    assert "000000000785.jpg" in {r.image_key for r in images}


def test_an_image_name_that_repeats_the_images_folder_says_to_give_the_folder_above(tmp_path, sample_dir):
    """An input audit: SPIN's imgname holds the dataset's subfolder (val2017/a.jpg); under --images
    .../val2017 it was 'image file not found' with no hint."""
    import shutil

    from fit3d.data.spin import read_spin
    from fit3d.data.writers import write_npz

    (tmp_path / "coco" / "val2017").mkdir(parents=True)
    shutil.copy(sample_dir / "000000000785.jpg", tmp_path / "coco" / "val2017")
    part = np.zeros((1, 24, 3), np.float32)
    part[:, :, :2], part[:, :, 2] = 150.0, 1.0
    write_npz(tmp_path / "s.npz", dict(imgname=np.asarray(["val2017/000000000785.jpg"]), center=np.full((1, 2), 200.0),
                                       scale=np.ones(1), part=part))
    _, problems = read_spin(tmp_path / "s.npz", tmp_path / "coco" / "val2017")
    [p] = [x for x in problems if x.severity == "error"]
    assert "image file not found (its name starts with the images folder's own name, val2017/" in p.reason
    images, problems = read_spin(tmp_path / "s.npz", tmp_path / "coco")
    assert [len(r.people) for r in images] == [1] and not [x for x in problems if x.severity == "error"]


def test_an_image_whose_outputs_could_not_be_named_is_an_input_error(tmp_path, sample_dir):
    """Found by a trial: a 240-character name failed every run ("run again to retry"), its temporary
    output name past the file system's 255 bytes; a legal output name is now written, and a name too
    long for the outputs is an input error naming why."""
    from fit3d.data.writers import atomic_write_bytes

    long_out = tmp_path / ("a" * 240 + ".jpg.npz")
    atomic_write_bytes(long_out, b"x")
    assert long_out.read_bytes() == b"x"
    d = json.loads((sample_dir / "test_coco.json").read_text())
    name = "b" * 236 + ".jpg"  # 240 bytes: <name>.incomplete.json would be 256
    entry = d["images"][0]
    shutil.copy(sample_dir / entry["file_name"], tmp_path / name)
    ok = "c" * 222 + ".jpg"  # 226 bytes: room for every output (render --save-mesh's <name>_<id>_<row>.obj too)
    shutil.copy(sample_dir / entry["file_name"], tmp_path / ok)
    d["images"] = [dict(entry, file_name=name), dict(entry, id=1, file_name=ok)]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == entry["id"]]
    d["annotations"] += [dict(a, id=a["id"] + 10**9, image_id=1) for a in d["annotations"]]
    (tmp_path / "ann.json").write_text(json.dumps(d))
    images, problems = read_coco(tmp_path / "ann.json", tmp_path)
    assert [r.image_key for r in images] == [ok]
    assert len(problems) == 1 and problems[0].severity == "error" and "240 bytes" in problems[0].reason


def test_an_input_none_of_whose_images_is_found_says_so_once_and_where_they_are(tmp_path, sample_dir):
    """A trial: annotations of another folder gave one 'image file not found' per image, nothing
    more; images one folder down were not pointed to."""
    from fit3d.data.coco import read_coco

    nested = tmp_path / "images" / "sub"
    nested.mkdir(parents=True)
    for f in sample_dir.glob("*.jpg"):
        shutil.copy(f, nested)
    images, problems = read_coco(sample_dir / "test_coco.json", tmp_path / "images")
    summary = [p for p in problems if "none of the 4 images that --annotations names" in p.reason]
    assert len(summary) == 1 and summary[0].severity == "warning"
    assert f"give --images {nested}" in summary[0].reason
    assert sum(p.severity == "error" for p in problems) == 4  # one per image, as before
    images, problems = read_coco(sample_dir / "test_coco.json", nested)  # found: no such warning
    assert not any("none of the" in p.reason for p in problems)
    from fit3d.data.images import none_found_problem

    deep = tmp_path / "deep" / "sub" / "val2017"  # a name with its subfolder: the folder above that one
    deep.mkdir(parents=True)
    (deep / "a.jpg").write_bytes(b"x")
    (tmp_path / "deep" / "a.jpg").write_bytes(b"x")  # the same file name elsewhere is not it
    said = none_found_problem([tmp_path / "deep" / "val2017" / "a.jpg"], 0, tmp_path / "deep", "--annotations")
    assert said.reason.endswith(f"give --images {tmp_path / 'deep' / 'sub'})")
    assert none_found_problem([tmp_path / "deep" / "x" / "a[1].jpg"], 0, tmp_path / "deep", "--annotations").reason \
        .endswith("or --images another folder?")  # (names compared literally, not as patterns)
