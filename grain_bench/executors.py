"""Sweep executors (plugins): ``local`` runs specs one after another in this process; ``ray`` (optional extra,
``grain_bench.ray_executor``) runs one Ray task per spec. Both append every record to the one store as it arrives."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

from tqdm.auto import tqdm

from grain_bench.errors import GrainBenchError
from grain_bench.hookspecs import hookimpl


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


class LocalExecutor:
    """Sequential, in-process execution; each record is stored as soon as its run ends."""

    def __init__(self, **options):
        if options:
            raise GrainBenchError(f"the local executor takes no options, got {', '.join(sorted(options))}")

    def run(self, specs, harness, store, progress: bool = True):
        """Run ``specs`` and append each record to ``store``."""
        records = []
        bar = tqdm(specs, desc="sweep", unit="run", disable=not progress or len(specs) < 2)
        for spec in bar:
            bar.set_postfix_str(spec.label(), refresh=True)
            record = harness.run(spec)
            store_record(store, record, spec)
            records.append(record)
        return records


def store_record(store, record, spec) -> None:
    """Append ``record`` to ``store`` and say on stderr when the run failed or its record had to be written aside."""
    aside = store.append(record)
    if aside is not None:
        tqdm.write(f"grain-bench: could not append run {spec.label()} to {store.path}; its record is kept in {aside} "
                   f"and goes into the store at the next `grain-bench run` with the same --results", file=sys.stderr)
    if not record.ok:
        tqdm.write(f"run {spec.label()} failed: {record.error}", file=sys.stderr)


def ray_executor(**options):
    """Factory of the Ray executor; imports it (and later Ray) only when chosen."""
    from grain_bench.ray_executor import RayExecutor

    return RayExecutor(**options)


@hookimpl
def register_executors(register):
    """Built-in executors."""
    register("local", LocalExecutor, "in-process, one run after another (default)")
    register("ray", ray_executor, "one Ray task per run on a local or existing Ray cluster (needs the ray extra)")
