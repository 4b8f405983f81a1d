"""Rewrite a results directory's records.jsonl in today's record form, keeping the old file beside it.

grain-bench migrates older records when it reads them (``leaderboard.store.current_form``: canonical method options,
data identities instead of paths). Reading needs the data files to compute a content hash, so a store that travels
to a machine without them is best rewritten once where they are:

    python scripts/migrate_results.py benchmarks/results/tweets-minilm

The old file is kept as records.jsonl.pre-migration; unreadable lines are left out and listed.
"""

from __future__ import annotations

import os
import sys

from grain_bench.leaderboard.store import RecordStore, encode_record


def migrate(results: str) -> int:
    """Rewrite ``results``/records.jsonl; returns how many records changed."""
    store = RecordStore(results)
    records = store.records()
    for problem in store.problems:
        print(f"{store.path}: left out {problem}", file=sys.stderr)
    changed = sum(1 for r in records if "previous_run_id" in r.method_info)
    backup = store.path + ".pre-migration"
    os.replace(store.path, backup)
    with open(store.path, "wb") as handle:
        for record in records:
            handle.write(encode_record(record))
    print(f"{store.path}: {len(records)} records, {changed} migrated; the old file is {backup}")
    return changed


if __name__ == "__main__":
    for folder in sys.argv[1:] or sys.exit(__doc__):
        migrate(folder)
