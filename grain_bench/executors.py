"""The built-in sweep executors (``grain_bench.sweep.Executor``), registered through the same hook as a plugin's:
``local`` runs specs one after another in this process; ``ray`` (optional extra, ``grain_bench.ray_executor``) runs
one Ray task per spec. Both store every record as it arrives."""

from __future__ import annotations

from tqdm.auto import tqdm

from grain_bench.errors import GrainBenchError
from grain_bench.hookspecs import hookimpl
from grain_bench.sweep import store_record


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


def ray_executor(**options):
    """Factory of the Ray executor; imports it (and later Ray) only when chosen."""
    from grain_bench.ray_executor import RayExecutor

    return RayExecutor(**options)


@hookimpl
def register_executors(register):
    """Built-in executors."""
    register("local", LocalExecutor, "in-process, one run after another (default)")
    register("ray", ray_executor, "one Ray task per run on a local or existing Ray cluster (needs the ray extra)")
