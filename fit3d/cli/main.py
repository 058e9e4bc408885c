"""The ``fit3d`` command line. Only options and wiring: the work is in
:mod:`fit3d.pipeline`, :mod:`fit3d.fitters` and :mod:`fit3d.data`.

One module per command group: :mod:`~fit3d.cli.fit` (smplify, eft, neuralannot),
:mod:`~fit3d.cli.train` (prepare-mocap, train-prior, train-regressor, setup-model),
:mod:`~fit3d.cli.evaluate` (evaluate, benchmark, print-schedule),
:mod:`~fit3d.cli.render` (render, report), :mod:`~fit3d.cli.cluster` (submit, merge) and
:mod:`~fit3d.cli.export` (export); the options shared by the fitting
commands are :class:`fit3d.cli.options.FitOptions`.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import warnings

import click

from fit3d.cli.cluster import merge, submit
from fit3d.cli.evaluate import benchmark, evaluate, print_schedule
from fit3d.cli.export import export
from fit3d.cli.fit import eft, neuralannot, smplify
from fit3d.cli.options import Terminated
from fit3d.cli.render import render, report
from fit3d.cli.train import prepare_mocap_cmd, setup_model_cmd, train_prior_cmd, train_regressor_cmd


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="fit3d", message="fit3d %(version)s", help="Print the version and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """fit3d: 3D human body pseudo-ground-truth from 2D keypoints.

    Fits a body model (anny by default, or SMPL/SMPL-H/SMPL-X) to every annotated
    person of a folder of images and writes one .npz of parameters per image.
    """
    handler = ConsoleHandler()
    handler.setFormatter(_CommandLineFormatter(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    before = warnings.showwarning  # for this command only: put back when it ends (a CliRunner, a notebook)
    warnings.showwarning = functools.partial(_show_warning, default=before)
    click.get_current_context().call_on_close(lambda: setattr(warnings, "showwarning", before))


class ConsoleHandler(logging.StreamHandler):
    """The command line's log lines on stderr, written through ``tqdm.write``: a line logged while a
    progress bar is drawn goes above the bar, not onto its line (``fit3d smplify:  50%|####  | 6/12
    [00:01<00:01]fit3d: warning: ...``); without a bar, as a plain ``StreamHandler``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - as logging's own handlers: reported, never raised
            self.handleError(record)


class _CommandLineFormatter(logging.Formatter):
    """fit3d's log records as the command line's other messages read: ``fit3d: warning: ...`` and
    ``fit3d: error: ...``; other libraries' records, and with ``--verbose`` every record, name
    their level and logger (``WARNING trimesh: ...``, ``DEBUG fit3d.pipeline.run: ...``)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        """One line (and a traceback where the record has one)."""
        if self.verbose or record.levelno < logging.WARNING or record.name.split(".")[0] != "fit3d":
            return super().format(record)
        text = f"fit3d: {'warning' if record.levelno == logging.WARNING else 'error'}: {record.getMessage()}"
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def _show_warning(message, category, filename, lineno, file=None, line=None, *, default) -> None:
    """fit3d's own warnings (a reduced ``setup-model``'s weights) as the command line's other
    warnings read, ``fit3d: warning: ...``, not ``fit3d setup-model:0: ReducedSetupWarning: ...``;
    every other warning through ``default`` (the hook the command found)."""
    from fit3d.body_models.weights import ReducedSetupWarning

    if issubclass(category, ReducedSetupWarning):
        from tqdm import tqdm

        tqdm.write(f"fit3d: warning: {message}", file=sys.stderr)  # (above a progress bar, as the log lines)
    else:
        default(message, category, filename, lineno, file, line)


for _command in (smplify, eft, neuralannot, prepare_mocap_cmd, train_prior_cmd, train_regressor_cmd, evaluate,
                 benchmark, print_schedule, render, report, submit, merge, export, setup_model_cmd):
    cli.add_command(_command)


def run(args: list[str] | None = None) -> int:
    """The command line as a function (``args``: default ``sys.argv[1:]``): the exit code, an
    error shown as click shows it. Ctrl-C exits 130, SIGINT's code, at any point: while fitting
    the run records it (:mod:`fit3d.pipeline.interrupt`); before (reading a large annotation
    file, building the model) click's own handling would say "Aborted!" and exit 1."""
    try:
        code = cli.main(args, prog_name="fit3d", standalone_mode=False)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:  # a usage or input error: its one line on stderr, its exit code
        e.show()
        code = e.exit_code
    except click.Abort as e:
        interrupted = isinstance(e.__cause__, KeyboardInterrupt)
        click.echo("fit3d: interrupted (Ctrl-C)" if interrupted else "Aborted!",
                   err=True)
        code = 130 if interrupted else 1
    except Terminated:  # SIGTERM outside a run's own handling (main(): before fitting starts)
        click.echo("fit3d: terminated (SIGTERM)", err=True)
        code = 128 + signal.SIGTERM
    return int(code or 0)


def _terminated(signum, frame):
    raise Terminated()


def main() -> None:
    """Console-script entry point: :func:`run`, its code as the process's exit status. A SIGTERM
    before the run installs its own handling (reading inputs, loading the model) exits 143 with
    one line saying so, as Ctrl-C exits 130 (the default action killed the process in silence)."""
    signal.signal(signal.SIGTERM, _terminated)
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    main()
