"""Running a sweep: the executor contract, signal handling, and storing each record as its run ends.

``run_sweep`` runs every spec that has no ``ok`` record yet (errors too with ``retry_failed``) on an executor from
the registry (``register_executors`` hook): ``local`` runs specs one after another in this process, ``ray`` one Ray
task per spec. Every executor implements ``Executor``: ``run(specs, harness, store, progress) -> records``, storing
each record with ``store_record`` as it arrives, so an interrupted sweep keeps what finished.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Protocol, runtime_checkable

from tqdm.auto import tqdm

from grain_bench.errors import UsageError
from grain_bench.records import RunRecord
from grain_bench.types import RunSpec


@runtime_checkable
class Executor(Protocol):
    """Where the runs of a sweep execute. Registered through ``register_executors`` as a factory taking the
    executor's options as keyword arguments (``-E key=value``; reject unknown ones with a ``GrainBenchError``)."""

    def run(self, specs: list[RunSpec], harness, store, progress: bool = True) -> list[RunRecord]:
        """Run ``specs`` with ``harness`` (or its ``config``, shipped to workers), ``store_record`` each record as it
        arrives, and return the new records. Raise ``KeyboardInterrupt`` (or ``SweepTerminated``) through."""


class SweepTerminated(KeyboardInterrupt):
    """Raised in the sweep when the process gets SIGTERM: finished runs are stored, the current one is dropped."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def terminate_gracefully():
    """Turn SIGTERM into ``SweepTerminated`` for the block (main thread only), so it unwinds like Ctrl-C.

    The store holds SIGINT/SIGTERM back while it writes a line, so a record is either whole or absent; the run
    that was in progress has no record and runs again when the same command is started again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SweepTerminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def store_record(store, record, spec) -> None:
    """Append ``record`` to ``store`` and say on stderr when the run failed or its record had to be written aside."""
    aside = store.append(record)
    if aside is not None:
        tqdm.write(f"grain-bench: could not append run {spec.label()} to {store.path}; its record is kept in {aside} "
                   f"and goes into the store at the next `grain-bench run` with the same --results", file=sys.stderr)
    if not record.ok:
        tqdm.write(f"run {spec.label()} failed: {record.error}", file=sys.stderr)


def will_run(spec: RunSpec, latest: dict[str, RunRecord], retry_failed: bool = False, rerun: bool = False) -> bool:
    """Whether a sweep runs ``spec`` given the store's ``latest`` records: not recorded yet, recorded as an error
    with ``retry_failed``, or any spec with ``rerun``."""
    record = latest.get(spec.run_id)
    return rerun or record is None or (not record.ok and retry_failed)


def run_sweep(specs: list[RunSpec], harness, store, retry_failed: bool = False, progress: bool = True,
              executor: str = "local", executor_options: dict | None = None, rerun: bool = False) -> list[RunRecord]:
    """Run every spec not already ``ok`` in ``store`` (errors only with ``retry_failed``, every spec with ``rerun``:
    its new record supersedes the recorded one); returns the new records."""
    latest = store.latest()
    for problem in store.problems:  # reported, never fatal: the run of a cut-off line simply runs again
        print(f"grain-bench: warning: {store.path} {problem} (skipped)", file=sys.stderr)
    todo = [s for s in specs if will_run(s, latest, retry_failed, rerun)]
    factory = harness.regs.executors.get(executor)
    try:
        runner = factory(**(executor_options or {}))
    except TypeError as exc:
        raise UsageError(f"executor {executor!r}: {exc}") from None
    with terminate_gracefully():  # SIGTERM unwinds like Ctrl-C: stored runs stay, the current one reruns next time
        return runner.run(todo, harness, store, progress=progress)
