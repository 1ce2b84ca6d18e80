"""One job per run directory: a run holds ``<run>/.lock`` for as long as it lives.

The lock is a small JSON file naming its holder: host, process id, the process's start time
(``/proc/<pid>/stat``, so a pid the system gave to another program is told apart), the boot it
belongs to, when it was taken, the mode, and, under a launcher, the launcher's pid and start time
(a job lives as long as its launcher: the lock stays held while rank 0 is gone but the job is not).

`acquire` creates it with ``O_CREAT | O_EXCL``, so of two starts exactly one gets it; the other
is refused with a `RunError` naming the holder and writes nothing. A lock whose holder is gone
(same host: its process and launcher no longer run, their pids now belong to other programs, or
the machine rebooted since) is stale: it is taken over with a one-line message. A lock from
another host is never taken over, since its process cannot be checked from here; the message says
which file to remove once that job is known to be gone. While one process decides, the others on
this host wait on a ``flock`` of the run directory, so two starts never both take over one stale
lock.

``.lock`` is hidden: it is not data (`files.is_data_file`), not a temporary (`files.remove_leftovers`
keeps it) and not a record (it exists before a start's snapshot, so `records.produced` does not
count it as something the start wrote).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import RunError
from .files import process_exists

LOCK_FILE = ".lock"
"""The lock's name inside a run directory."""


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # field 22, counted after the command name, which may itself hold spaces and ')'
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's id (pids and start times only compare within one boot), where Linux tells it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _running(pid: int | None, start: int | None) -> str | None:
    """None when `pid` is the process that started at `start`; otherwise why it is not."""
    if not pid:
        return "no process recorded"
    if not process_exists(pid):
        return "no longer running"
    now = process_start(pid)
    if start is not None and now is not None and now != start:
        return "no longer running; its pid now belongs to another program"
    return None


@dataclasses.dataclass
class Holder:
    """Who holds a run: what the lock file says."""

    host: str
    pid: int
    since: str
    mode: str = "?"
    start: int | None = None
    boot: str | None = None
    launcher: int | None = None
    launcher_start: int | None = None

    @classmethod
    def me(cls, mode: str) -> Holder:
        """This process; its launcher too when torch's elastic launcher started it."""
        launcher = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None
        return cls(
            host=socket.gethostname(), pid=os.getpid(), start=process_start(os.getpid()), boot=boot_id(),
            since=datetime.datetime.now().isoformat(timespec="seconds"), mode=mode,
            launcher=launcher, launcher_start=process_start(launcher) if launcher else None,
        )

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder `path` names; None when the file cannot be read as a lock (a half-written one)."""
        try:
            data = json.loads(path.read_text())
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (OSError, ValueError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (mode {self.mode}), running since {self.since}"

    def why_stale(self) -> str | None:
        """None while the holder's job may still run; otherwise why it is known to be gone."""
        if self.host != socket.gethostname():
            return None  # cannot be checked from here
        boot = boot_id()
        if self.boot and boot and self.boot != boot:
            return "the machine has restarted since"
        why = _running(self.pid, self.start)
        if why is None:
            return None
        if self.launcher and _running(self.launcher, self.launcher_start) is None:
            return None  # rank 0 is gone, but its launcher is still stopping the job
        return why

    def alive(self) -> bool | None:
        """True while the holder runs, False when it is gone, None when this host cannot tell."""
        if self.host != socket.gethostname():
            return None
        return self.why_stale() is None


@dataclasses.dataclass
class RunLock:
    """A lock this process holds; `release` removes it (only while it is still this process's)."""

    path: Path
    holder: Holder

    def release(self) -> None:
        current = Holder.read(self.path)
        if current is not None and (current.pid, current.start, current.host) == (self.holder.pid, self.holder.start, self.holder.host):
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _one_at_a_time(directory: Path) -> Iterator[None]:
    """Starts on this host decide about a directory's lock one after the other (flock)."""
    try:
        import fcntl
    except ImportError:  # no flock: O_EXCL alone still lets only one start create the lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without flock: O_EXCL still decides
        yield
    finally:
        os.close(fd)  # closing releases the flock


def acquire(directory: str | os.PathLike, mode: str, say: Callable[[str], None] = print) -> RunLock:
    """Take `directory`'s lock for this process, taking over a stale one (told through `say`).

    Refuses with a `RunError` naming the holder while another job holds it; nothing is written then.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    me = Holder.me(mode)
    with _one_at_a_time(directory):
        if path.exists():
            holder = Holder.read(path)
            if holder is None:
                say(f"took over the lock of {directory}: {path} could not be read (left half-written by a killed start)")
            elif (why := holder.why_stale()) is not None:
                say(f"took over the lock of {directory} from a job that is gone: {holder.describe()}, {why}")
            elif holder.host != me.host:
                raise RunError(
                    f"run directory {directory} is in use by {holder.describe()} (its lock {path}). Wait for that "
                    f"job to end; if it is known to be gone (this host cannot check another's processes), "
                    f"remove {path} and start again."
                )
            else:
                raise RunError(
                    f"run directory {directory} is in use by {holder.describe()}; one job at a time writes "
                    f"into a run. Wait for it to end or stop it (kill {holder.launcher or holder.pid}), then start again."
                )
            path.unlink(missing_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # created between our look and our write, by a start on another host
            holder = Holder.read(path)
            raise RunError(
                f"run directory {directory} is in use by {holder.describe() if holder else 'another job'} "
                f"(its lock {path}); wait for it to end, then start again."
            ) from None
        try:
            os.write(fd, (json.dumps(dataclasses.asdict(me)) + "\n").encode())
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
    return RunLock(path, me)


def release_orphaned(directory: str | os.PathLike) -> bool:
    """Remove a lock left in `directory` by a worker of this launcher that did not get to release it
    (rank 0 killed); returns whether one was removed. Called by the launcher once its job has ended."""
    path = Path(directory) / LOCK_FILE
    holder = Holder.read(path) if path.is_file() else None
    if holder is None or holder.launcher != os.getpid() or holder.host != socket.gethostname():
        return False
    if _running(holder.pid, holder.start) is None:
        return False
    path.unlink(missing_ok=True)
    return True


__all__ = ["LOCK_FILE", "Holder", "RunLock", "acquire", "boot_id", "process_start", "release_orphaned"]
