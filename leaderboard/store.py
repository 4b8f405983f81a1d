"""The append-only record store: one JSON record per line in ``records.jsonl``.

Appends take a file lock and write a whole line in one call, so several processes can share one store. A corrupt
or half-written line is reported in ``problems`` and skipped on read, never fatal and never silently dropped; a
later append starts on a fresh line so it cannot glue itself onto a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from dataclasses import dataclass, field

from filelock import FileLock

from grain_bench.types import SCHEMA_VERSION, RunRecord

RECORDS_FILE = "records.jsonl"
_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM until the block ends; their previous handlers then run as usual.

    Blocking the signals in the main thread is not enough in a process with other threads (torch's, tqdm's): the
    kernel may hand a process-directed signal to any thread that does not block it, and Python then runs the handler
    in the main thread at the next bytecode, mid-append. So for the duration the Python-level handlers only note the
    signal, and it is raised again once the block is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers
        return
    pending: list[int] = []
    previous = {}
    for signum in _DEFERRED_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is None:  # installed from C: leave it alone
            continue
        previous[signum] = handler
        signal.signal(signum, lambda number, frame: pending.append(number))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal blocked meanwhile is delivered here
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


@dataclass
class StoreProblem:
    """A line that could not be read."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class RecordStore:
    """Records of one results directory."""

    directory: str
    problems: list[StoreProblem] = field(default_factory=list)

    @property
    def path(self) -> str:
        """Path of ``records.jsonl``."""
        return os.path.join(self.directory, RECORDS_FILE)

    def _lock(self) -> FileLock:
        return FileLock(self.path + ".lock", timeout=60)

    def append(self, record: RunRecord) -> None:
        """Append one record atomically with respect to other writers and to signals.

        The whole line goes out in one ``write`` on an ``O_APPEND`` descriptor under the file lock, then ``fsync``;
        SIGINT/SIGTERM are held back meanwhile (in the main thread), so an interrupted sweep never leaves half a line.
        SIGKILL cannot be held back; a line cut short by it is reported by ``records()`` and the next append starts
        on a fresh line.
        """
        os.makedirs(self.directory, exist_ok=True)
        data = (json.dumps(record.to_dict(), sort_keys=True, default=str) + "\n").encode()
        with self._lock(), _signals_deferred():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":  # a previous writer died mid-line
                    data = b"\n" + data
                view = memoryview(data)
                while view:  # a regular file takes the whole write at once; loop only for exotic filesystems
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[RunRecord]:
        """Every readable record in file order; unreadable lines are listed in ``problems``."""
        self.problems = []
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                text = raw.decode("utf-8", errors="replace").strip()
                if not text:
                    continue
                try:
                    data = json.loads(text)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    record = RunRecord.from_dict(data)
                except (ValueError, TypeError) as exc:
                    self.problems.append(StoreProblem(number, f"unreadable record ({exc})"))
                    continue
                if record.schema_version > SCHEMA_VERSION:
                    self.problems.append(StoreProblem(number, f"schema version {record.schema_version} is newer than "
                                                              f"this grain-bench ({SCHEMA_VERSION}); upgrade to read it"))
                    continue
                out.append(record)
        return out

    def latest(self) -> dict[str, RunRecord]:
        """The last record of every run id (a retried run replaces its earlier error)."""
        latest: dict[str, RunRecord] = {}
        for record in self.records():
            previous = latest.get(record.run_id)
            if previous is None or record.ok or not previous.ok:
                latest[record.run_id] = record
        return latest

    def done(self) -> set[str]:
        """Run ids with an ``ok`` record."""
        return {run_id for run_id, record in self.latest().items() if record.ok}
