"""Signals that end a run: its clean-up still runs, and workers never outlive their launcher.

* `stop_on_signals`: while a run executes, SIGTERM and SIGHUP raise `Stopped` in the main thread,
  so the run unwinds as after Ctrl-C (KeyboardInterrupt): its lock is released and a start that
  produced nothing leaves nothing. Further signals while it unwinds are ignored, so the clean-up
  finishes; SIGKILL still ends it at once.
* `follow_launcher`: a worker started by ``--nproc-per-node`` (or torchrun) asks Linux to send it
  SIGTERM when its launcher dies (``prctl(PR_SET_PDEATHSIG)``), then checks that the launcher did
  not die before that. torch's launcher puts every worker in a session of its own, so without
  this a launcher killed with SIGKILL left its workers training.

The CLI reports `Stopped` in one line (exit code 128 + the signal's number); a worker says
nothing, since its launcher reports for the whole job.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a run in order (SIGINT already raises KeyboardInterrupt)."""

LAUNCHER_PID = "BRAINSYNTH_LAUNCHER_PID"
"""Set by `distributed.launch` for its workers: the process whose death ends them."""

PR_SET_PDEATHSIG = 1


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopped(BaseException):
    """A signal ended the run; raised where the run was, so its clean-up runs on the way out.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        self.detail = detail
        super().__init__(f"stopped by {signal_name(signum)}{detail}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, `STOP_SIGNALS` raise `Stopped` (once); outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def stop(signum: int, frame) -> None:
        if stopping:
            return  # already unwinding: let the clean-up finish
        stopping.append(signum)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


_following = False


def follow_launcher() -> None:
    """In a worker: receive SIGTERM when the launcher dies; raise `Stopped` if it is already gone.

    Linux only (elsewhere nothing happens). Called as early as a worker can: the CLI before it reads
    the recipe, `distributed.setup` again for workers started otherwise.
    """
    global _following
    if _following or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    _following = True
    expected = os.environ.get(LAUNCHER_PID)
    parent = os.getppid()
    # The launcher may have died between starting this process and the prctl above; the parent is
    # then another process (init, or a subreaper), and no signal will come.
    if (expected and expected.isdigit() and parent != int(expected)) or parent == 1:
        raise Stopped(signal.SIGTERM, ": the launcher of this worker is gone")
