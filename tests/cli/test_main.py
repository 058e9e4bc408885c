from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from fit3d.cli.main import cli


def _commands(group: click.Group, path=()):
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"fit3d {version('fit3d')}"


def test_help_lists_commands_and_options():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "smplify" in r.output
    r = CliRunner().invoke(cli, ["smplify", "--help"])
    for opt in ("--images", "--annotations", "--keypoints", "--out", "--model", "--model-path", "--device",
                "--batch-size", "--focal-length", "--limit", "--shard", "--overwrite", "--prior", "--schedule"):
        assert opt in r.output


def test_every_command_exists():
    names = {" ".join(p) for p, _ in _commands(cli)}
    assert names == {"smplify", "eft", "neuralannot", "prepare-mocap", "train-prior", "train-regressor", "evaluate",
                     "benchmark", "benchmark make", "benchmark run", "print-schedule", "render", "report", "submit", "merge", "export", "setup-model"}
    for path, _ in _commands(cli):
        r = CliRunner().invoke(cli, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)


COMMANDS = [((), cli), *_commands(cli)]


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "fit3d" for p, _ in COMMANDS])
def test_every_option_has_a_help_text(path, cmd):
    assert (cmd.help or "").strip(), path
    for p in cmd.params:
        if isinstance(p, click.Option):
            assert (p.help or "").strip(), (path, p.opts)


def test_the_entry_point_exits_with_each_commands_code_and_130_for_ctrl_c_before_fitting(tmp_path, monkeypatch,
                                                                                          capsys):
    """Ctrl-C while the inputs were read or the model built said 'Aborted!' and exited 1 (click's
    handling), not 130 as during fitting (found by a helper)."""
    import fit3d.cli.fit as fit_cli
    from fit3d.cli.main import run

    assert run(["--version"]) == 0
    assert run(["eft", "--no-such-option"]) == 2
    assert run(["merge", "--fits", str(tmp_path)]) == 1  # nothing to merge: a one-line error
    assert "Error:" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_cli, "load_inputs", interrupted)
    assert run(["smplify", "--images", str(tmp_path), "--out", str(tmp_path / "fits")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_fit3d_warnings_read_as_the_command_lines_other_warnings(capsys):
    """A reduced set-up's warning printed as 'fit3d setup-model:0: ReducedSetupWarning: ...'."""
    from fit3d.body_models.weights import ReducedSetupWarning
    from fit3d.cli.main import _show_warning

    shown = []  # (the hook the command line finds, e.g. Python's own)
    _show_warning("weights from a reduced set-up", ReducedSetupWarning, "fit3d setup-model", 0,
                  default=lambda *a: shown.append(a))
    _show_warning("something else", UserWarning, "x.py", 3, default=lambda *a: shown.append(a))
    err = capsys.readouterr().err
    assert err == "fit3d: warning: weights from a reduced set-up\n" and "setup-model:0" not in err
    assert shown == [("something else", UserWarning, "x.py", 3, None, None)]


def test_the_warning_hook_is_put_back_when_a_command_ends():
    import warnings

    before = warnings.showwarning
    for _ in range(2):  # (installed twice, it wrapped itself)
        assert CliRunner().invoke(cli, ["print-schedule"]).exit_code == 0
        assert warnings.showwarning is before


def test_log_records_read_as_the_command_lines_messages_for_fit3d_only():
    import logging

    from fit3d.cli.main import _CommandLineFormatter

    def line(name, level, verbose=False):
        record = logging.LogRecord(name, level, __file__, 1, "something %s", ("happened",), None)
        return _CommandLineFormatter(verbose).format(record)

    assert line("fit3d.pipeline.run", logging.WARNING) == "fit3d: warning: something happened"
    assert line("fit3d.pipeline.run", logging.ERROR) == "fit3d: error: something happened"
    assert line("trimesh", logging.WARNING) == "WARNING trimesh: something happened"  # not passed off as fit3d's
    assert line("fit3d.pipeline.run", logging.WARNING, verbose=True) == "WARNING fit3d.pipeline.run: something happened"


@pytest.mark.parametrize("args", [
    ["merge"], ["export", "--format", "spin", "--out", "{tmp}/e.npz"], ["report", "--out", "{tmp}/r.html"],
    ["render", "--images", "{tmp}", "--out", "{tmp}/r"],
    ["evaluate", "--gt", "examples/data/coco_sample/test_coco.json"],
])
def test_commands_reading_a_run_folder_refuse_one_without_fits_alike(tmp_path, args):
    """A folder with no per-image fit (a wrong --fits) is the same one-line error, exit 1, for
    every command that reads a run's folder (render exited 2, report and evaluate 0)."""
    from pathlib import Path

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "summary.json").write_text("{}")  # not a fit
    root = Path(__file__).resolve().parents[2]
    args = [a.format(tmp=tmp_path) for a in args]
    args = [str(root / a) if a.startswith("examples/") else a for a in args]
    r = CliRunner().invoke(cli, [args[0], "--fits", str(empty), *args[1:]])
    assert r.exit_code == 1, r.output
    assert "no per-image fits" in r.output and str(empty) in r.output
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "e.npz").exists()


def test_help_does_not_import_torch_or_numpy():
    """The commands import torch and the package only when they run, so ``fit3d --help`` and every
    command's ``--help`` answer without torch's seconds of start-up (a fresh interpreter: this
    test process has torch already)."""
    import subprocess
    import sys

    paths = [list(p) for p, _ in _commands(cli)]
    code = ("import sys\nfrom click.testing import CliRunner\nfrom fit3d.cli.main import cli\n"
            f"for p in [[]] + {paths!r}:\n"
            "    r = CliRunner().invoke(cli, [*p, '--help'])\n"
            "    assert r.exit_code == 0, (p, r.output)\n"
            "print(sorted(m for m in ('torch', 'numpy', 'roma', 'PIL') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
