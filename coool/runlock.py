"""One run per results folder: a lock file naming its holder (pid, host, start time, command).

Two runs on one folder would both do all the work (twice the requests) and
race on the same files. A run holds ``<results>/.coool-run.lock`` for its
whole length; the file is created with O_EXCL (so exactly one creator wins)
and records who holds it. A lock is stale when its holder is gone: on this
host, its pid is not alive, or the pid now belongs to another process (its
start time differs from the recorded one). A lock from another host cannot be
checked from here: the message says whose it is and which file to remove if
that run is gone.

Re-entrant within one context: ``coool run`` takes the lock, and the flow it
starts (and the stage flows inside that) find it held in ``_HELD`` and go on
(no deadlock); a deployment's flow run takes it itself.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from coool.files import pid_alive

LOCK_NAME = ".coool-run.lock"
# A lock file still empty this long after it was created is a writer killed between
# create and write (the record is a few hundred bytes, written at once).
_EMPTY_GRACE_S = 10.0
# The results folders this context holds (resolved paths): nested flows go on.
_HELD: ContextVar[frozenset[str]] = ContextVar("coool_results_locks", default=frozenset())


@dataclass(frozen=True)
class Holder:
    """Who holds a results folder: what the lock file records."""

    pid: int
    host: str
    since: str  # when the lock was taken (UTC, ISO 8601)
    process_start: float | None  # the holder process's start time (epoch s): tells a reused pid
    command: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since}"


class LockUnavailable(ValueError):
    """The results folder can't hold a lock file (not a folder, read-only, no permission)."""


class ResultsInUse(RuntimeError):
    """The results folder is held by another run (``--no-wait``)."""

    def __init__(self, folder: Path, holder: Holder) -> None:
        self.folder, self.holder = folder, holder
        super().__init__(in_use_message(folder, holder))


def in_use_message(folder: Path, holder: Holder) -> str:
    """"results folder X is in use by pid N on host H since T" (+ how to clear a lock of another host)."""
    text = f"results folder {folder} is in use by {holder.describe()}"
    if holder.command:
        text += f" ({holder.command})"
    if holder.host != socket.gethostname():
        text += f"; if that run is gone, remove {folder / LOCK_NAME}"
    return text


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), None when it is not running or can't be told."""
    try:
        import psutil
    except ImportError:  # psutil is optional: Linux's /proc says it too
        return _proc_start_time(pid)
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:
        return _proc_start_time(pid)


def _proc_start_time(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after "pid (comm)"
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def holder_gone(holder: Holder) -> bool:
    """Whether the holder's process is gone (stale lock). Only decidable on its own host:
    a lock of another host counts as held."""
    if holder.host != socket.gethostname():
        return False
    if not pid_alive(holder.pid):
        return True
    started = process_start_time(holder.pid)
    # A pid reused by a later process: its start time is not the recorded one
    # (psutil and /proc round differently: allow a second).
    return started is not None and holder.process_start is not None and abs(started - holder.process_start) > 1.0


def read_holder(path: Path) -> Holder | None:
    """The lock file's record; None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["since"]),
                      None if data.get("process_start") is None else float(data["process_start"]),
                      str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _me(command: str) -> Holder:
    pid = os.getpid()
    return Holder(pid, socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds"),
                  process_start_time(pid), command)


class RunLock:
    """The lock of one results folder: ``try_acquire()`` / ``release()``."""

    def __init__(self, results_dir: str | os.PathLike[str], command: str = "") -> None:
        self.folder = Path(results_dir).resolve()
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
        self.held: Holder | None = None

    def try_acquire(self) -> Holder | None:
        """Take the lock: None when taken, else who holds it. A stale lock is removed and taken.

        Raises LockUnavailable (one line naming the folder) when the folder can't hold it.
        """
        try:
            return self._try_acquire()
        except OSError as exc:
            raise LockUnavailable(
                f"results folder {self.folder}: cannot write its run lock {LOCK_NAME}: {exc.strerror or exc}"
            ) from None

    def _try_acquire(self) -> Holder | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            me = _me(self.command)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder_or_stale()
                if holder is None:
                    continue  # the stale lock was removed: try again
                return holder
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(me), fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = me
            return None
        raise RuntimeError(f"{self.path}: could not take the lock (it keeps changing)")

    def _holder_or_stale(self) -> Holder | None:
        """The live holder, or None after removing a stale lock file.

        Checked and removed under a short flock of a guard file, so two waiters
        can't both judge the same stale file and one remove the other's new lock.
        """
        guard = self.folder / f"{LOCK_NAME}.guard"
        with open(guard, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                holder = read_holder(self.path)
                if holder is None:
                    try:
                        age = time.time() - self.path.stat().st_mtime
                    except FileNotFoundError:
                        return None
                    if age < _EMPTY_GRACE_S:  # being written right now
                        return Holder(0, "?", "just now", None, "starting")
                elif not holder_gone(holder):
                    return holder
                self.path.unlink(missing_ok=True)
                return None
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.held is None:
            return
        current = read_holder(self.path)
        if current is not None and current.pid == self.held.pid and current.since == self.held.since \
                and current.host == self.held.host:
            self.path.unlink(missing_ok=True)
        self.held = None


def _key(results_dir: str | os.PathLike[str]) -> str:
    return str(Path(results_dir).resolve())


def held_here(results_dir: str | os.PathLike[str]) -> bool:
    """Whether this context (this run) already holds the results folder."""
    return _key(results_dir) in _HELD.get()


def _still_waiting(
    lock: RunLock, holder: Holder, *, wait: bool, told: bool, on_wait: Callable[[str], None], hint: str
) -> bool:
    """One poll of a held lock: give up (``wait`` False), or say once who holds it. Returns ``told``."""
    if not wait:
        raise ResultsInUse(lock.folder, holder)
    if not told:
        on_wait(in_use_message(lock.folder, holder) + hint)
    return True


@contextmanager
def _holding(lock: RunLock, results_dir: str | os.PathLike[str]) -> Iterator[None]:
    """The block runs holding the lock (nested runs in this context see it held); released after."""
    token = _HELD.set(_HELD.get() | {_key(results_dir)})
    try:
        yield
    finally:
        _HELD.reset(token)
        lock.release()


@contextmanager
def results_lock(
    results_dir: str | os.PathLike[str],
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] = lambda message: None,
    poll_s: float = 1.0,
    command: str = "",
) -> Iterator[None]:
    """Hold the results folder for the block. Another run holding it: wait (``on_wait``
    is told once, with who holds it), or raise ResultsInUse when ``wait`` is False."""
    if held_here(results_dir):
        yield
        return
    lock = RunLock(results_dir, command)
    told = False
    while (holder := lock.try_acquire()) is not None:
        told = _still_waiting(lock, holder, wait=wait, told=told, on_wait=on_wait, hint="; waiting... (--no-wait to exit)")
        time.sleep(poll_s)
    with _holding(lock, results_dir):
        yield


@asynccontextmanager
async def aresults_lock(
    results_dir: str | os.PathLike[str],
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] = lambda message: None,
    poll_s: float = 1.0,
    command: str = "",
) -> AsyncIterator[None]:
    """``results_lock`` for a flow: waits without blocking the event loop."""
    if held_here(results_dir):
        yield
        return
    lock = RunLock(results_dir, command)
    told = False
    while (holder := lock.try_acquire()) is not None:
        told = _still_waiting(lock, holder, wait=wait, told=told, on_wait=on_wait, hint="; waiting...")
        await asyncio.sleep(poll_s)
    with _holding(lock, results_dir):
        yield
