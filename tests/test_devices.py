import pytest
import torch

from fit3d.devices import check_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message of a CPU-only torch")
def test_cuda_on_a_cpu_only_torch_is_one_line_in_python_too(anny_model):
    """A researcher's trial: build_body_model / make_batch with device="cuda" raised torch's
    'Torch not compiled with CUDA enabled' assertion; the CLI alone said how to fix it."""
    from fit3d.body_models import build_body_model
    from fit3d.data.batching import make_batch
    from fit3d.data.conventions import COCO17
    from fit3d.data.records import Person

    for call in (lambda: check_device("cuda"), lambda: build_body_model("anny", device="cuda"),
                 lambda: make_batch([Person("a.jpg", None, (640, 480), 1, None, torch.ones(17, 3).numpy(), COCO17)],
                                    COCO17, device=torch.device("cuda"))):
        with pytest.raises(ValueError, match="has no usable CUDA: install a CUDA build with 'pip install"):
            call()


def test_devices_this_torch_can_use_and_bad_names():
    check_device("cpu")
    check_device(torch.device("cpu"))
    check_device(None)  # torch's default device (make_batch(device=None) worked before the check)
    with pytest.raises(ValueError, match="'gpu0' is not a torch device"):
        check_device("gpu0")


def test_devices_this_torch_cannot_allocate_on_are_one_line():
    """A trial: --device mps / meta / xpu gave torch's traceback from deep in the model (exit 1);
    now one ValueError each (the CLI's usage error, exit 2)."""
    from click.testing import CliRunner

    from fit3d.cli.main import cli

    with pytest.raises(ValueError, match="meta is a device without data"):
        check_device("meta")
    kinds = [k for k in ("mps", "xpu") if not getattr(torch, k).is_available()]
    for kind in kinds:
        with pytest.raises(ValueError, match=f"cannot use the device '{kind}'.*: use cpu or cuda"):
            check_device(kind)
    r = CliRunner().invoke(cli, ["smplify", "--images", ".", "--out", "o", "--device", "meta"])
    assert r.exit_code == 2 and "Traceback" not in r.output and "without data" in r.output


def test_a_cuda_index_this_machine_lacks_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"cuda:2 asked for, but this machine has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        check_device("cuda:2")
    check_device("cuda:1")


def test_an_unknown_gender_is_a_clear_error():
    from fit3d.body_models import build_body_model

    with pytest.raises(ValueError, match="unknown gender 'nonbinary'; choose from neutral, male, female"):
        build_body_model("smpl", "nowhere", gender="nonbinary")
