"""The record store under concurrent writers, cut-off lines and signals."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading

import pytest

from grain_bench.leaderboard.store import RecordStore
from grain_bench.records import RunRecord
from grain_bench.types import RunSpec

WRITERS = 4
APPENDS = 200
PADDING = 40_000  # characters per record: far above the 4 KiB pipe/page sizes and Python's 8 KiB write buffer


def _record(writer: int, index: int) -> RunRecord:
    run_id = f"w{writer}-{index:04d}"
    # Every record carries its own id in a long payload, so a torn or interleaved line cannot parse back intact.
    spec = RunSpec(method="dense", task=f"writer-{writer}", backbone="none", target_density=1.0, seed=index, recipe={})
    return RunRecord(run_id=run_id, spec=spec, status="ok",
                     method_info={"payload": run_id * (PADDING // len(run_id))})


def _hammer(directory: str, writer: int, start) -> None:
    store = RecordStore(directory)
    start.wait()
    for index in range(APPENDS):
        store.append(_record(writer, index))


def test_concurrent_appends_keep_every_record_whole(results_dir):
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_hammer, args=(results_dir, w, start)) for w in range(WRITERS)]
    for worker in workers:
        worker.start()
    start.set()  # all writers begin together
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0

    store = RecordStore(results_dir)
    records = store.records()
    assert store.problems == []
    ids = [r.run_id for r in records]
    expected = {f"w{w}-{i:04d}" for w in range(WRITERS) for i in range(APPENDS)}
    assert len(ids) == WRITERS * APPENDS and set(ids) == expected  # each exactly once
    for record in records:
        assert record.method_info["payload"] == record.run_id * (PADDING // len(record.run_id))
    with open(store.path, "rb") as handle:
        assert handle.read().count(b"\n") == WRITERS * APPENDS  # no blank or split lines
    # Each writer's own records keep their order (appends are not reordered).
    for w in range(WRITERS):
        own = [r.spec.seed for r in records if r.spec.task == f"writer-{w}"]
        assert own == sorted(own)


def test_cut_off_line_is_reported_and_next_append_starts_fresh(results_dir):
    store = RecordStore(results_dir)
    store.append(_record(0, 0))
    with open(store.path, "ab") as handle:  # a writer killed mid-line
        handle.write(b'{"run_id": "w0-0001", "spec": {"wri')
    store.append(_record(0, 2))
    records = store.records()
    assert [r.run_id for r in records] == ["w0-0000", "w0-0002"]
    assert len(store.problems) == 1 and store.problems[0].line == 2
    assert "unreadable" in str(store.problems[0])
    assert store.done() == {"w0-0000", "w0-0002"}


@pytest.mark.signals
@pytest.mark.parametrize("other_thread", [False, True])
def test_sigterm_during_append_waits_for_the_whole_line(results_dir, other_thread):
    """A signal that arrives while a line is being written is delivered only after the line is complete, also when
    another thread (torch's, tqdm's) could take the process-directed signal while the main thread blocks it."""
    stop = threading.Event()
    if other_thread:
        threading.Thread(target=stop.wait, daemon=True).start()
    store = RecordStore(results_dir)
    received = []

    def handler(signum, frame):
        received.append(os.path.getsize(store.path))
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    real_write = os.write

    def signal_then_write(fd, data):  # the signal lands in the middle of the append, before its bytes go out
        os.kill(os.getpid(), signal.SIGTERM)
        return real_write(fd, data)

    try:
        os.write = signal_then_write
        try:
            store.append(_record(1, 1))
            raised = False
        except KeyboardInterrupt:
            raised = True
    finally:
        os.write = real_write
        signal.signal(signal.SIGTERM, previous)
        stop.set()
    assert raised and received  # the handler did run, after the append
    assert received[0] == os.path.getsize(store.path)  # ... when the whole line was already on disk
    assert [r.run_id for r in store.records()] == ["w1-0001"] and store.problems == []


def test_threads_share_a_store(results_dir):
    store = RecordStore(results_dir)

    def write(t):
        for i in range(25):
            store.append(_record(10 + t, i))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = store.records()
    assert store.problems == [] and len({r.run_id for r in records}) == len(records) == 100
    assert all(json.loads(json.dumps(r.to_dict()))["run_id"] == r.run_id for r in records)
