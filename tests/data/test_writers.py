import numpy as np
import pytest
import torch

from fit3d.data.writers import read_torch, write_torch


class _NotWeights:
    pass


def test_read_torch_reads_what_write_torch_wrote(tmp_path):
    write_torch(tmp_path / "w.pt", {"kind": "gmm", "means": torch.arange(3.0)})
    back = read_torch(tmp_path / "w.pt")
    assert back["kind"] == "gmm" and torch.equal(back["means"], torch.arange(3.0))


def test_read_torch_turns_every_unreadable_file_into_one_value_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_torch(tmp_path / "missing.pt")
    text = tmp_path / "README.md"
    text.write_text("# not weights\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    write_torch(tmp_path / "whole.pt", {"a": torch.zeros(1000)})
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:2000])  # cut short
    for name in ("README.md", "empty.pt", "cut.pt"):
        with pytest.raises(ValueError, match="is not a torch file"):
            read_torch(tmp_path / name)
    write_torch(tmp_path / "list.pt", [1, 2])
    with pytest.raises(ValueError, match="holds a list"):
        read_torch(tmp_path / "list.pt")
    write_torch(tmp_path / "object.pt", {"a": _NotWeights()})  # not loadable by the safe loader
    with pytest.raises(ValueError, match="not a readable torch file of weights"):
        read_torch(tmp_path / "object.pt")
    assert isinstance(read_torch(tmp_path / "object.pt", weights_only=False)["a"], _NotWeights)
    torch.save({"a": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_torch(tmp_path / "legacy.pt")["a"], torch.ones(2))  # torch's old format still reads


def test_strict_json_writes_non_finite_floats_as_null(tmp_path):
    import json
    import math

    from fit3d.data.writers import json_text, write_json

    obj = dict(a=float("nan"), b=[np.float32("inf"), 1.5, (np.float64(-np.inf),)], c=np.array([1.0, np.nan]), d=True,
               e=tmp_path)
    strict = dict(a=None, b=[None, 1.5, [None]], c=[1.0, None], d=True, e=str(tmp_path))
    assert json.loads(json_text(obj, strict=True), parse_constant=lambda c: 1 / 0) == strict
    write_json(tmp_path / "s.json", obj, strict=True)
    assert json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: 1 / 0) == strict
    assert math.isnan(json.loads(json_text(obj))["a"])  # not strict: Python's NaN, as before


@pytest.mark.parametrize("text", [b"hi\n", b"this is not a model\n", b"i\n", b"\x80\x02}q\x00."])
def test_read_torch_refuses_any_other_file_with_one_value_error(tmp_path, text):
    """Found by a trial: a two-letter text file given as --prior-path ended in a traceback (torch's
    legacy loader raised KeyError 105 on it, which read_torch did not catch)."""
    from fit3d.data.writers import read_torch

    f = tmp_path / "notamodel.txt"
    f.write_bytes(text)
    with pytest.raises(ValueError, match="notamodel.txt"):
        read_torch(f)


def test_an_npz_is_streamed_to_its_file_and_a_failed_write_leaves_the_old_one(tmp_path):
    """Outputs and merged datasets were built whole in memory first (a 500 MB array: +516 MB)."""
    import numpy as np

    from fit3d.data.writers import write_npz

    path = tmp_path / "a.npz"
    write_npz(path, dict(x=np.arange(3)))

    class Unsaveable:
        def __array__(self, *a, **k):
            raise RuntimeError("stopped mid-write")

    with pytest.raises(RuntimeError):
        write_npz(path, dict(x=np.arange(1000), y=Unsaveable()))
    assert np.load(path)["x"].tolist() == [0, 1, 2] and [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    """A writer killed outright (SIGKILL, a lost node) left its hidden temporary file for good (a
    scale trial); another shard's file being written now must stay."""
    import os
    import time

    from fit3d.data.writers import remove_stale_temporaries

    from fit3d.data.writers import atomic_write

    (tmp_path / "sub").mkdir()
    names = []  # the names atomic_write gives its temporary files, a line break in the output's name too
    for name in ("a.jpg.npz", "sub/b\nc.jpg.npz"):
        atomic_write(tmp_path / name, lambda f: names.extend(p.name for p in (tmp_path / name).parent.glob(".*.tmp")))
    old = [tmp_path / names[0], tmp_path / "sub" / names[1]]
    fresh = tmp_path / ".c.jpg.npz.fit3d-qwertyui.tmp"
    others = [tmp_path / ".notes.tmp", tmp_path / ".cache.20240101.tmp", tmp_path / "a.jpg.npz"]
    for f in old + [fresh] + others:
        f.write_bytes(b"x")
    for f in old + others:
        os.utime(f, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert remove_stale_temporaries(tmp_path) == 2
    assert not any(f.exists() for f in old) and fresh.exists() and all(f.exists() for f in others)


def test_an_output_path_through_a_link_then_dotdot_is_written_where_the_os_puts_it(tmp_path):
    """Found by trying evaluate --per-sample LINK/../new/x.csv: the folder was made where the link
    points, while the temporary file's name was the path written out, so the write raised
    FileNotFoundError after the folder was made elsewhere."""
    from fit3d.data.writers import atomic_write_bytes

    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "deep")
    atomic_write_bytes(tmp_path / "link" / ".." / "new" / "x.csv", b"ok")
    assert (tmp_path / "real" / "new" / "x.csv").read_bytes() == b"ok"  # where the OS resolves it
    assert not (tmp_path / "new").exists() and not list((tmp_path / "real" / "new").glob(".*.tmp"))


def test_read_fit_names_a_member_that_is_not_an_array(tmp_path):
    """A zip whose member lacks the .npy header (rewritten, its CRC right) came back as bytes, and
    merge and export stopped with a TypeError traceback (a trial)."""
    import zipfile

    import numpy as np
    import pytest

    from fit3d.data.writers import read_fit, write_npz

    path = tmp_path / "a.jpg.npz"
    write_npz(path, {"image": np.array("a.jpg"), "betas": np.zeros((1, 10), np.float32)})
    assert set(read_fit(path)) == {"image", "betas"}
    with zipfile.ZipFile(path, "w") as z:  # the same names, one member garbage
        z.writestr("image.npy", b"garbage")
        buf = __import__("io").BytesIO()
        np.save(buf, np.zeros((1, 10), np.float32))
        z.writestr("betas.npy", buf.getvalue())
    with pytest.raises(ValueError, match="corrupt .npz .*image not an array"):
        read_fit(path)
