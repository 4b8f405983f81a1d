"""Sweep executors (plugins): ``local`` runs specs one after another in this process."""

from __future__ import annotations

from tqdm.auto import tqdm

from grain_bench.hookspecs import hookimpl


class LocalExecutor:
    """Sequential, in-process execution; each record is stored as soon as its run ends."""

    def run(self, specs, harness, store, progress: bool = True):
        """Run ``specs`` and append each record to ``store``."""
        records = []
        bar = tqdm(specs, desc="sweep", unit="run", disable=not progress or len(specs) < 2)
        for spec in bar:
            bar.set_postfix_str(spec.label(), refresh=True)
            record = harness.run(spec)
            store.append(record)
            records.append(record)
            if not record.ok:
                tqdm.write(f"run {spec.label()} failed: {record.error}")
        return records


@hookimpl
def register_executors(register):
    """Built-in executors."""
    register("local", LocalExecutor, "in-process, one run after another (default)")
