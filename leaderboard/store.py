"""The append-only record store: one JSON record per line in ``records.jsonl``.

Appends take a file lock and write a whole line in one call, so several processes can share one store. A corrupt
or half-written line is reported in ``problems`` and skipped on read, never fatal and never silently dropped; a
later append starts on a fresh line so it cannot glue itself onto a truncated one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from filelock import FileLock

from grain_bench.types import SCHEMA_VERSION, RunRecord

RECORDS_FILE = "records.jsonl"


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
        """Append one record atomically with respect to other writers."""
        os.makedirs(self.directory, exist_ok=True)
        line = json.dumps(record.to_dict(), sort_keys=True, default=str) + "\n"
        with self._lock():
            with open(self.path, "ab+") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":  # a previous writer died mid-line: start a new one
                        line = "\n" + line
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())

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
