"""The append-only record store: one JSON record per line in ``records.jsonl``.

Appends take a file lock and write a whole line in one call, so several processes can share one store. A corrupt,
half-written or wrongly typed line is reported in ``problems`` and skipped on read, never fatal and never silently
dropped; a later append starts on a fresh line so it cannot glue itself onto a truncated one.

A trained result is never lost to storage: ``check_writable`` refuses an unusable location before anything runs; an
append that fails (full disk, read-only filesystem, a lock held too long) is rolled back to the previous end of the
file, retried, and then written aside to a file outside the results directory (``aside_path``), from which the next
``grain-bench run`` on the same results directory appends it (``recover_aside``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from filelock import FileLock, Timeout

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.method import without_defaults
from grain_bench.plugins import registered_defaults
from grain_bench.task import is_identity
from grain_bench.types import SCHEMA_VERSION, RunRecord, RunSpec

RECORDS_FILE = "records.jsonl"
#: quiet re-timings of the runs (``grain-bench measure``, ``grain_bench.retime``), one JSON line each
MEASUREMENTS_FILE = "measurements.jsonl"
#: Seconds an append waits for the store lock (env ``GRAIN_BENCH_LOCK_TIMEOUT``); other writers hold it for a write.
DEFAULT_LOCK_TIMEOUT = 60.0
LOCK_TIMEOUT_ENV = "GRAIN_BENCH_LOCK_TIMEOUT"
#: Where records that could not be appended are kept (env ``GRAIN_BENCH_HOME``, else the user's cache folder).
HOME_ENV = "GRAIN_BENCH_HOME"
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
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={value!r} is not a number of seconds >= 0")
    return seconds


def grain_bench_home() -> str:
    """grain-bench's own folder for this user (``GRAIN_BENCH_HOME``, else ``$XDG_CACHE_HOME/grain-bench``)."""
    if os.environ.get(HOME_ENV):
        return os.environ[HOME_ENV]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "grain-bench")


def encode_record(record: RunRecord) -> bytes:
    """One strict JSON line (``RunRecord`` has already replaced non-finite numbers by null, listed in ``nonfinite``)."""
    return (json.dumps(record.to_dict(), sort_keys=True, default=str, allow_nan=False) + "\n").encode()


@dataclass
class RecordStore:
    """Records of one results directory."""

    directory: str
    problems: list[StoreProblem] = field(default_factory=list)
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
            known = {(r.run_id, r.created) for r in self.records()}
            with open(claimed, "rb") as handle:
                lines = handle.read().splitlines()
            for raw in lines:
                try:
                    record = RunRecord.from_dict(json.loads(raw)["record"])
                except (ValueError, TypeError, KeyError):
                    continue  # a line cut short while it was written aside: nothing to recover from it
                if (record.run_id, record.created) in known:
                    continue
                try:
                    self._append_line(encode_record(record))
                except (OSError, Timeout) as exc:
                    _put_back(claimed, path)
                    raise StoreError(f"cannot append the records kept aside in {path} to {self.path}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
                known.add((record.run_id, record.created))
                recovered += 1
            os.remove(claimed)
        return recovered

    # ---- reading ------------------------------------------------------------------------------------------------
    def records(self) -> list[RunRecord]:
        """Every readable record in file order; unreadable or wrongly typed lines are listed in ``problems``."""
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
                record = current_form(record)
                if record.schema_version > SCHEMA_VERSION:
                    newer = f"schema version {record.schema_version} is newer than this grain-bench ({SCHEMA_VERSION})"
                    self.problems.append(StoreProblem(number, f"{newer}; upgrade to read it"))
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


def current_form(record: RunRecord) -> RunRecord:
    """A record written by an older grain-bench, read as today's writer would write it (a read-time migration).

    Spec changes (they change the run id; the record is read under the new id, the old one kept in
    ``method_info["previous_run_id"]``, so a sweep of the same command finds it and does not run it again):

    - method options equal to their defaults were once stored (``-o grain.alpha=0.3`` named another run than no
      ``-o``); they are dropped now;
    - ``spec.data`` once held the data's location (a folder, or ``default``); it holds the data's identity now (a
      content hash of the files, or a hub commit), computed here when the data can still be read.

    Record changes, schema 1 -> 2: ``higher_is_better`` (each metric's direction, from the registered task; a name
    rule for a task that is not installed) and ``density["encoder_params"]`` (from the parameter counts)."""
    spec = dict(record.spec)
    options = spec.get("method_options")
    if options and isinstance(options, dict):
        spec["method_options"] = without_defaults(options, registered_defaults(spec.get("method")) or {})
    data = spec.get("data")
    if isinstance(data, str) and not is_identity(data):
        identity = _identity_of(spec.get("task"), data)
        if identity is not None:
            spec["data"], spec["data_dir"] = identity, None if data == "default" else data
    changes: dict = {}
    if spec != record.spec:
        with contextlib.suppress(TypeError, ValueError):  # a spec this version cannot build keeps its old form
            changes.update(run_id=RunSpec.from_dict(spec).run_id, spec=spec,
                           method_info={**record.method_info, "previous_run_id": record.run_id})
    if record.schema_version < 2:
        metrics = {*record.scores, *record.teacher_scores, *record.chance_scores}
        changes["higher_is_better"] = {m: _direction(spec.get("task"), m) for m in sorted(metrics)}
        params = record.params
        if "encoder_params" not in record.density and params.get("encoder") and params.get("dense_encoder"):
            changes["density"] = {**record.density, "encoder_params": params["encoder"] / params["dense_encoder"]}
        changes["schema_version"] = 2
    return dataclasses.replace(record, **changes) if changes else record


#: words in a metric's name that mean lower is better, for records of tasks that are not installed here
_LOWER_IS_BETTER = ("loss", "error", "perplexity", "mse", "mae", "rmse", "wer", "cer")


def _direction(task: str | None, metric: str) -> bool:
    """Whether a larger ``metric`` is better for ``task``: the registered task says; else a rule on the name."""
    try:
        from grain_bench.plugins import get_registries

        return bool(get_registries().tasks.get(task).higher_is_better(metric))
    except Exception:  # the task is not installed here: fall back to the name
        return not any(word in metric.lower() for word in _LOWER_IS_BETTER)


_IDENTITIES: dict[tuple, str | None] = {}


def _identity_of(task: str | None, data: str) -> str | None:
    """The identity key of an old spec's data (``default`` or a folder), or None when it cannot be read here."""
    if (task, data) not in _IDENTITIES:
        try:
            from grain_bench.plugins import get_registries

            cls = get_registries().tasks.get(task)
            _IDENTITIES[(task, data)] = cls(None if data == "default" else data).data_identity().key
        except Exception:  # an unknown task, files that moved, an offline hub: the record keeps its old form
            _IDENTITIES[(task, data)] = None
    return _IDENTITIES[(task, data)]


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
    """``record`` with its latency and environment replaced by a re-timing (marked ``source``), if there is one."""
    if not measurement or not record.ok:
        return record
    latency = [{**measurement["dense"], "source": "grain-bench measure"},
               {**measurement["compact"], "source": "grain-bench measure"}]
    return dataclasses.replace(record, latency=latency, environment=dict(measurement.get("environment", {})))
