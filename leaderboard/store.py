"""The append-only record store: one JSON record per line in ``records.jsonl``.

Appends take a file lock and write a whole line in one call, so several processes can share one store. A corrupt,
half-written or wrongly typed line is reported in ``problems`` and skipped on read, never fatal and never silently
dropped; a later append starts on a fresh line so it cannot glue itself onto a truncated one.

A trained result is never lost to storage: ``check_writable`` refuses an unusable location before anything runs; an
append that fails (full disk, read-only filesystem, a lock held too long) is rolled back to the previous end of the
file, retried, and then written aside to a file outside the results directory (``aside_path``), from which the next
``grain-bench run`` on the same results directory appends it (``recover_aside``).

Reading is a pure read (``grain_bench.records``). Records of an older schema are listed in ``outdated``; tables and
sweeps refuse such a store with the command that upgrades it once (``upgrade``, ``grain-bench leaderboard upgrade``),
which rewrites the file atomically and keeps the old one beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.files import grain_bench_home
from grain_bench.records import SCHEMA_VERSION, LatencyEntry, RunRecord, SchemaMismatch
from grain_bench.stored import read

RECORDS_FILE = "records.jsonl"
#: quiet re-timings of the runs (``grain-bench measure``, ``grain_bench.retime``), one JSON line each
MEASUREMENTS_FILE = "measurements.jsonl"
#: Seconds an append waits for the store lock (env ``GRAIN_BENCH_LOCK_TIMEOUT``); other writers hold it for a write.
DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_TIMEOUT_ENV = "GRAIN_BENCH_LOCK_TIMEOUT"
APPEND_ATTEMPTS = 3
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
class UpgradeResult:
    """What ``RecordStore.upgrade`` did: records upgraded by their old schema version, lines kept as they were, the
    old file's new name (None when nothing was written), and what the upgrade could not look up."""

    upgraded: dict[int, int] = field(default_factory=dict)
    kept: list = field(default_factory=list)
    backup: str | None = None
    moved: dict[str, str] = field(default_factory=dict)  # old run id -> new, for runs whose id changed
    notes: list[str] = field(default_factory=list)


@dataclass
class StoreProblem:
    """A line that could not be read."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class StoreError(GrainBenchError):
    """A record could not be written to the store (the message says why and where it was kept instead)."""


def lock_timeout() -> float:
    """The store-lock timeout in seconds (``GRAIN_BENCH_LOCK_TIMEOUT``, default 60)."""
    value = os.environ.get(LOCK_TIMEOUT_ENV)
    if not value:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={value!r} is not a number of seconds >= 0: set it to one such as "
                         f"{DEFAULT_LOCK_TIMEOUT:g}, or unset it for the default ({DEFAULT_LOCK_TIMEOUT:g} s)")
    return seconds


def encode_record(record: RunRecord) -> bytes:
    """One strict JSON line (``RunRecord`` has already replaced non-finite numbers by null, listed in ``nonfinite``)."""
    return (json.dumps(record.to_dict(), sort_keys=True, default=str, allow_nan=False) + "\n").encode()


@dataclass
class RecordStore:
    """Records of one results directory."""

    directory: str
    problems: list[StoreProblem] = field(default_factory=list)
    #: line numbers of the records of an older schema seen by the last read (``upgrade`` brings them up to date)
    outdated: list[int] = field(default_factory=list)
    #: (run id, path) of every record this store object had to write aside instead of appending
    aside: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        """Path of ``records.jsonl``."""
        return os.path.join(self.directory, RECORDS_FILE)

    def _lock(self, timeout: float | None = None) -> FileLock:
        return FileLock(self.path + ".lock", timeout=lock_timeout() if timeout is None else timeout)

    # ---- before a sweep -----------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Raise ``UsageError`` unless records can be appended here: a directory (or one that can be created), a
        regular records file, write access, and the lock obtainable. Writes nothing that stays."""
        directory = os.path.abspath(self.directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise UsageError(f"--results {self.directory!r} is a file; expected a results directory (or a new path)")
        if not os.path.isdir(directory):
            parent = directory
            while not os.path.exists(parent):
                parent = os.path.dirname(parent)
            if not os.path.isdir(parent):
                raise UsageError(f"cannot create results directory {self.directory!r}: {parent!r} is not a directory")
            _probe_write(parent, f"cannot create results directory {self.directory!r}")
            return
        if os.path.lexists(self.path) and not os.path.isfile(self.path):
            raise UsageError(f"{self.path!r} is not a regular file (a directory?); the store needs it to be the "
                             f"records file: move it away or choose another --results")
        _probe_write(directory, f"results directory {self.directory!r} is not writable")
        if os.path.exists(self.path):
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            except OSError as exc:
                raise UsageError(f"cannot append to {self.path!r}: {exc.strerror or exc}") from None
        timeout = min(lock_timeout(), 10.0)
        try:
            with self._lock(timeout):
                pass
        except Timeout:
            raise UsageError(f"the store lock {self.path}.lock is held by another process for more than {timeout:g} s; "
                             f"if no other grain-bench writes to {self.directory!r}, that process is stuck: stop it "
                             f"(the lock is freed when it exits)") from None
        except OSError as exc:
            raise UsageError(f"cannot take the store lock {self.path}.lock: {exc.strerror or exc}") from None

    # ---- writing ------------------------------------------------------------------------------------------------
    def append(self, record: RunRecord) -> str | None:
        """Append one record; never loses it. Returns None when it is in the store, else the path it was written to.

        Each attempt writes the whole line in one ``write`` on an ``O_APPEND`` descriptor under the file lock, then
        ``fsync``s; SIGINT/SIGTERM are held back meanwhile (in the main thread), so an interrupted sweep never leaves
        half a line. A failed write (full disk, read-only filesystem) is cut back to the previous end of the file.
        After ``APPEND_ATTEMPTS`` failed attempts (a lock held too long counts) the record goes to ``aside_path``
        and is listed in ``aside``; raises ``StoreError`` only when even that fails (the message holds the record).
        SIGKILL cannot be held back; a line cut short by it is reported by ``records()`` and the next append starts
        on a fresh line.
        """
        data = encode_record(record)
        error: Exception | None = None
        for attempt in range(APPEND_ATTEMPTS):
            try:
                self._append_line(data)
                return None
            except (OSError, Timeout) as exc:
                error = exc
                if attempt + 1 < APPEND_ATTEMPTS:
                    time.sleep(0.5 * (attempt + 1))  # a transient failure (a lock, an NFS hiccup) may pass
        return self._write_aside(record, data, error)

    def _append_line(self, data: bytes) -> None:
        append_line(self.path, data)

    @property
    def aside_path(self) -> str:
        """Where records go that cannot be appended: one file per results directory, outside it."""
        return self._aside_paths()[0]

    def _aside_paths(self) -> tuple[str, str]:
        # grain-bench's own folder first; the temporary folder when that one is on the full or read-only disk too
        name = hashlib.sha256(os.path.abspath(self.directory).encode()).hexdigest()[:16] + ".jsonl"
        return (os.path.join(grain_bench_home(), "unsaved", name),
                os.path.join(tempfile.gettempdir(), "grain-bench-unsaved", name))

    def _write_aside(self, record: RunRecord, data: bytes, error: Exception | None) -> str:
        reason = (f"the store lock was held by another process for more than {lock_timeout():g} s"
                  if isinstance(error, Timeout) else getattr(error, "strerror", None) or str(error))
        entry = json.dumps({"results": os.path.abspath(self.directory), "error": reason, "record": record.to_dict()},
                           sort_keys=True, default=str, allow_nan=False) + "\n"
        tried = []
        for path in self._aside_paths():
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(entry)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                tried.append(f"{path}: {exc.strerror or exc}")
                continue
            self.aside.append((record.run_id, path))
            return path
        raise StoreError(f"could not append run {record.run_id} to {self.path} ({reason}) nor write it aside "
                         f"({'; '.join(tried)}); the record follows, append it by hand: {data.decode().strip()}")

    def recover_aside(self) -> int:
        """Append the records an earlier sweep wrote aside for this results directory (each once); returns how many.

        The aside file is first claimed by renaming it, so two sweeps starting at once do not both append it. Raises
        ``StoreError`` when the records cannot be appended; the file is then put back for the next attempt."""
        recovered = 0
        for path in self._aside_paths():
            claimed = f"{path}.recovering-{os.getpid()}"
            try:
                os.replace(path, claimed)
            except FileNotFoundError:
                continue
            known = self._identities()
            with open(claimed, "rb") as handle:
                lines = handle.read().splitlines()
            for raw in lines:
                try:  # appended as it was written (an older grain-bench's record is upgraded with the rest)
                    record = json.loads(raw)["record"]
                    identity = (record["run_id"], record.get("created", ""))
                except (ValueError, TypeError, KeyError):
                    continue  # a line cut short while it was written aside: nothing to recover from it
                if identity in known:
                    continue
                try:
                    self._append_line((json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode())
                except (OSError, Timeout) as exc:
                    _put_back(claimed, path)
                    raise StoreError(f"cannot append the records kept aside in {path} to {self.path}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
                known.add(identity)
                recovered += 1
            os.remove(claimed)
        return recovered

    # ---- reading ------------------------------------------------------------------------------------------------
    def _lines(self):
        """(line number, stripped text) of every non-empty line."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                text = raw.decode("utf-8", errors="replace").strip()
                if text:
                    yield number, text

    def records(self) -> list[RunRecord]:
        """Every readable record in file order, read purely (no registry, no data files); unreadable or wrongly typed
        lines are listed in ``problems``, records of an older schema in ``outdated``."""
        self.problems, self.outdated = [], []
        out = []
        for number, text in self._lines():
            try:
                out.append(RunRecord.from_dict(json.loads(text)))
            except SchemaMismatch as exc:
                if exc.older:
                    self.outdated.append(number)
                else:
                    self.problems.append(StoreProblem(number, str(exc)))
            except (ValueError, TypeError) as exc:
                self.problems.append(StoreProblem(number, f"unreadable record ({exc})"))
        return out

    def _identities(self) -> set[tuple[str, str]]:
        """(run id, created) of every record line that names them, whatever its schema."""
        found = set()
        for _, text in self._lines():
            try:
                data = json.loads(text)
                found.add((data["run_id"], data.get("created", "")))
            except (ValueError, TypeError, KeyError):
                continue
        return found

    def check_current(self) -> None:
        """Raise ``UsageError`` when the store holds records of an older schema: they are read only once upgraded
        (a sweep would otherwise run their specs again, a table leave them out)."""
        if not os.path.isfile(self.path):
            return
        self.records()
        if self.outdated:
            raise UsageError(f"{self.path} holds {len(self.outdated)} record(s) of an older schema than this "
                             f"grain-bench reads ({SCHEMA_VERSION}); upgrade them once with `grain-bench leaderboard "
                             f"upgrade --results {self.directory}` (the old file is kept beside)")

    # ---- upgrading ----------------------------------------------------------------------------------------------
    def upgrade(self, context) -> UpgradeResult:
        """Bring every record of an older schema up to this one (``grain_bench.migrations``, with what ``context``
        may look up) and rewrite the file atomically under the store lock, the old one kept beside it as
        ``records.jsonl.pre-schema-<N>``. A line that cannot be read or upgraded is kept as it was and reported;
        current records are kept byte for byte. A run the upgrade moves to a new id takes its re-timings along
        (``measurements.jsonl``, kept beside likewise). Writes nothing when no record needs it."""
        from grain_bench.migrations import upgrade

        result, moved = UpgradeResult(), {}
        with self._lock(), _signals_deferred():
            out = []
            for number, text in self._lines():
                try:
                    data = json.loads(text)
                    version = data.get("schema_version", 1) if isinstance(data, dict) else None
                    if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
                        record = RunRecord.from_dict(upgrade(data, context))
                        moved[data.get("run_id")] = record.run_id
                        out.append(encode_record(record))
                        result.upgraded[version] = result.upgraded.get(version, 0) + 1
                        continue
                except (ValueError, TypeError) as exc:
                    result.kept.append(StoreProblem(number, f"kept as it was ({exc})"))
                out.append((text + "\n").encode())
            if result.upgraded:
                result.backup = replace_lines(self.path, out)
                result.moved = {old: new for old, new in moved.items() if old != new}
                move_measurements(self.directory, result.moved)
        result.notes = list(context.notes)
        return result

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


def append_line(path: str, data: bytes) -> None:
    """Append one whole line to ``path`` under its file lock, with SIGINT/SIGTERM held back; a failed write is cut
    back to the previous end of the file (no partial line), then raised. Shared by every append-only file of a
    results directory (records, measurements)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with FileLock(path + ".lock", timeout=lock_timeout()), _signals_deferred():
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":  # a previous writer died mid-line
                data = b"\n" + data
            try:
                view = memoryview(data)
                while view:  # a regular file takes the whole write at once; loop only for exotic filesystems
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # roll back a partial line (ENOSPC mid-write)
                raise
        finally:
            os.close(fd)


def _put_back(claimed: str, path: str) -> None:
    """Return a claimed aside file to ``path``, after anything written aside there meanwhile."""
    with open(claimed, "rb") as source, open(path, "ab") as target:
        target.write(source.read())
    os.remove(claimed)


def _probe_write(directory: str, what: str) -> None:
    """Create and remove a temporary file in ``directory``; ``UsageError`` with ``what`` when that fails."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".grain-bench-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{what}: {exc.strerror or exc}") from None


def replace_lines(path: str, lines: list[bytes]) -> str:
    """Swap in a file of ``lines`` at ``path`` (written and synced aside, then renamed over the old one, which stays
    as a hard link or copy under ``<path>.pre-schema-<N>``); returns that name. Called with the file's lock held."""
    backup = f"{path}.pre-schema-{SCHEMA_VERSION}"
    suffix = 1
    while os.path.lexists(backup):
        backup, suffix = f"{path}.pre-schema-{SCHEMA_VERSION}.{suffix}", suffix + 1
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "wb") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        try:
            os.link(path, backup)
        except OSError:  # a filesystem without hard links
            shutil.copy2(path, backup)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return backup


def move_measurements(results_dir: str, moved: dict[str, str]) -> None:
    """Re-file the re-timings of runs that an upgrade moved to a new id (old id -> new id), under the measurements'
    own lock; an unreadable line is kept as it was. Nothing to move: nothing written."""
    path = measurements_path(results_dir)
    if not moved or not os.path.isfile(path):
        return
    with FileLock(path + ".lock", timeout=lock_timeout()):
        with open(path, "rb") as handle:
            raw_lines = handle.readlines()
        lines, changed = [], False
        for raw in raw_lines:
            try:
                entry = json.loads(raw)
                if entry["run_id"] in moved:
                    entry["run_id"], changed = moved[entry["run_id"]], True
                    raw = (json.dumps(entry, sort_keys=True) + "\n").encode()
            except (ValueError, TypeError, KeyError):
                pass
            lines.append(raw)
        if changed:
            replace_lines(path, lines)


def _timed_this(measurement: dict[str, Any], record) -> bool:
    """Whether ``measurement`` timed ``record``'s compact shape (its per-head widths and FFN widths)."""
    if "head_widths" not in measurement:
        return not _earlier(measurement.get("created"), record.created)
    widths = tuple(tuple(tuple(head) for head in layer) for layer in measurement["head_widths"])
    return (widths == record.shape.head_widths and tuple(measurement.get("ffn", ())) == record.shape.ffn
            and measurement.get("hidden") == record.shape.units.get("hidden"))


def _earlier(first: Any, second: Any) -> bool:
    """Whether ISO time ``first`` is before ``second`` (False when either is missing or unreadable)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(first) < dt.datetime.fromisoformat(second)
    except (TypeError, ValueError):
        return False


def measurements_path(results_dir: str) -> str:
    """Where re-timings are stored."""
    return os.path.join(results_dir, MEASUREMENTS_FILE)


def load_measurements(results_dir: str) -> dict[str, dict[str, Any]]:
    """The latest measurement of every run id (unreadable lines are skipped)."""
    latest: dict[str, dict[str, Any]] = {}
    path = measurements_path(results_dir)
    if not os.path.isfile(path):
        return latest
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("run_id"), str):
                latest[entry["run_id"]] = entry
    return latest


def with_measurement(record, measurement: dict[str, Any] | None):
    """``record`` with its latency and environment replaced by a re-timing (marked ``source``), if there is one of
    this record's compact shape: a record that a rerun made after the latest re-timing of its run id (``--rerun``)
    with other masks keeps its own timing, never the one of the record it superseded. Re-timings from before they
    named their shape apply to records made before them."""
    if not measurement or not record.ok or not _timed_this(measurement, record):
        return record
    latency = [read(LatencyEntry, {**measurement[label], "source": "grain-bench measure"})
               for label in ("dense", "compact")]
    return dataclasses.replace(record, latency=latency, environment=dict(measurement.get("environment", {})))
