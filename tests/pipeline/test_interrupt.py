"""fit3d.pipeline.interrupt: signals that stop a run cleanly, and steps they must not split."""

import os
import signal

import pytest

from fit3d.data.readers import read_coco
from fit3d.pipeline import RunConfig, run
from fit3d.pipeline.interrupt import Interrupted, deferred, interruptible


def _signal_while_swapping(monkeypatch, signum):
    """``signal.signal`` that sends ``signum`` to this process right after it installs the first
    handler of a swap (once): the moment between the two swaps."""
    real, sent = signal.signal, []

    def installing(s, handler):
        previous = real(s, handler)
        if not sent and s == signal.SIGINT:
            sent.append(s)
            signal.raise_signal(signum)
        return previous

    monkeypatch.setattr(signal, "signal", installing)
    return sent


def test_deferred_signals_arrive_when_the_block_ends():
    steps = []
    with pytest.raises(Interrupted):
        with interruptible():
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("after the signal")  # still in the block
            steps.append("never")
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    with pytest.raises(Interrupted) as stopped:  # SIGINT then SIGTERM: the scheduler's SIGTERM counts (exit 143)
        with interruptible():
            with deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.signum == signal.SIGTERM
    with pytest.raises(ValueError, match="its own error"):  # a block that raises: its error, not an interruption
        with interruptible():
            with deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("its own error")


def test_a_signal_while_the_handlers_are_swapped_in_stops_with_the_previous_handlers_back(monkeypatch):
    """Found by a review: a signal between the two swaps raised in the middle of them, before their
    restoring was armed, so fit3d's handler stayed installed for the rest of the process."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sent = _signal_while_swapping(monkeypatch, signal.SIGINT)
    ran = []
    with pytest.raises(Interrupted) as stopped:
        with interruptible():
            ran.append("block")
    monkeypatch.undo()
    assert sent and stopped.value.signum == signal.SIGINT and not ran
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_run_signalled_while_it_swaps_its_handlers_records_an_interruption(tmp_path, sample_copy, anny_model,
                                                                             fast_fitter, monkeypatch):
    """The same moment in a run: recorded as interrupted (exit 130), not a traceback, and nothing fitted."""
    images, _ = read_coco(sample_copy / "test_coco.json", sample_copy)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _signal_while_swapping(monkeypatch, signal.SIGINT)
    s = run(images, fast_fitter, anny_model, RunConfig(tmp_path / "fits", progress=False))["this_run"]
    monkeypatch.undo()
    assert s["interrupted"] and s["exit_code"] == 130 and s["people_fitted"] == 0
    assert {s_: signal.getsignal(s_) for s_ in before} == before


def test_a_signal_while_the_handlers_are_put_back_still_puts_them_back(monkeypatch):
    """A review: a signal between the end of the block and the blocking of signals for the restore ran
    fit3d's handler, whose Interrupted escaped the restore and left that handler installed. The restore
    is tried again and the signal then goes to the handlers put back (here Python's: KeyboardInterrupt)."""
    from fit3d.pipeline import interrupt

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real, calls = interrupt._blocked, []

    def blocked_after_a_signal():
        calls.append(1)
        if len(calls) == 2:  # the restore's first try: the signal lands before the mask
            signal.raise_signal(signal.SIGINT)
        return real()

    monkeypatch.setattr(interrupt, "_blocked", blocked_after_a_signal)
    with pytest.raises(KeyboardInterrupt):
        with interruptible():
            pass
    monkeypatch.undo()
    assert len(calls) == 3 and {s: signal.getsignal(s) for s in before} == before
