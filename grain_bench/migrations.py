"""Ordered upgrades of stored records: ``MIGRATIONS[n]`` brings a record (its JSON object) from schema n - 1 to n.

They run once, by an explicit ``grain-bench leaderboard upgrade --results DIR`` (``RecordStore.upgrade``), never
while reading: a read is a pure read, and a store with older records says so. An upgrade may look things up that a
read must not (``UpgradeContext``): a method's default options, a task's metric directions and its data files.
Where something cannot be looked up here (a plugin that is not installed, data files that moved), the record keeps
what it had for that part and the upgrade says so; upgrade again where they are to finish it.

To change the record's form: bump ``grain_bench.records.SCHEMA_VERSION`` and add the function that turns the previous
version's JSON into the new one here; the committed results directories are upgraded with the command above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grain_bench.method import without_defaults
from grain_bench.records import SCHEMA_VERSION
from grain_bench.types import RunSpec

#: words in a metric's name that mean lower is better, for records of tasks that are not installed here
LOWER_IS_BETTER_WORDS = ("loss", "error", "perplexity", "mse", "mae", "rmse", "wer", "cer")


@dataclass
class UpgradeContext:
    """What an upgrade may look up, in the registries it is given; ``notes`` collects what it could not."""

    regs: Any  # grain_bench.registry.Registries
    notes: list[str] = field(default_factory=list)
    _identities: dict[tuple, str | None] = field(default_factory=dict)

    def defaults(self, method: str | None) -> dict[str, Any] | None:
        """The default options of ``method``, or None when no installed plugin registers it."""
        if method not in self.regs.methods:
            self._note(f"method {method!r} is not installed: its runs keep their stored options")
            return None
        return {name: default for name, _, default in self.regs.methods.get(method).Options.describe()}

    def higher_is_better(self, task: str | None, metric: str) -> bool:
        """A metric's direction: the registered task says; for a task not installed, a rule on the metric's name."""
        if task in self.regs.tasks:
            return bool(self.regs.tasks.get(task).higher_is_better(metric))
        self._note(f"task {task!r} is not installed: its metrics' directions are read from their names")
        return not any(word in metric.lower() for word in LOWER_IS_BETTER_WORDS)

    def identity(self, task: str | None, data: str) -> str | None:
        """The identity key of an old spec's data (``default`` or a folder), or None when it cannot be read here."""
        if (task, data) not in self._identities:
            try:
                cls = self.regs.tasks.get(task)
                self._identities[(task, data)] = cls(None if data == "default" else data).data_identity().key
            except Exception as exc:  # an unknown task, files that moved, an offline hub: the spec keeps its data
                self._identities[(task, data)] = None
                self._note(f"the data of task {task!r} at {data!r} could not be read ({exc}): its runs keep that "
                           f"location as their data")
        return self._identities[(task, data)]

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)


def to_schema_2(record: dict[str, Any], context: UpgradeContext) -> dict[str, Any]:
    """Schema 1 -> 2: each metric's direction (``higher_is_better``) and the kept share of the encoder's parameters
    (``density["encoder_params"]``, from the parameter counts)."""
    spec = record.get("spec") or {}
    metrics = {*record.get("scores", {}), *record.get("teacher_scores", {}), *record.get("chance_scores", {})}
    out = {**record, "schema_version": 2,
           "higher_is_better": {m: context.higher_is_better(spec.get("task"), m) for m in sorted(metrics)}}
    params, density = record.get("params") or {}, record.get("density") or {}
    if "encoder_params" not in density and params.get("encoder") and params.get("dense_encoder"):
        out["density"] = {**density, "encoder_params": params["encoder"] / params["dense_encoder"]}
    return out


def to_schema_3(record: dict[str, Any], context: UpgradeContext) -> dict[str, Any]:
    """Schema 2 -> 3 (typed parts): the spec in its one stored form, under the id that form hashes to (the old id kept
    in ``method_info["previous_run_id"]``, so a sweep of the same command finds the run):

    - method options equal to their defaults were once stored (``-o grain.alpha=0.3`` named another run than no
      ``-o``); they are left out;
    - ``spec.data`` once held the data's location (a folder, or ``default``); it holds the data's identity (a content
      hash of the files, or a hub commit), computed where the data can still be read.
    The parts' JSON is unchanged; from schema 3 on it is read through the typed parts (``grain_bench.records``)."""
    spec = dict(record.get("spec") or {})
    options = spec.get("method_options")
    if options and isinstance(options, dict):
        spec["method_options"] = without_defaults(options, context.defaults(spec.get("method")) or {})
    data = spec.get("data")
    if isinstance(data, str) and not data.startswith(("sha256:", "hub:")):
        identity = context.identity(spec.get("task"), data)
        if identity is not None:
            spec["data"], spec["data_dir"] = identity, None if data == "default" else data
    out = {**record, "schema_version": 3}
    if spec != record.get("spec"):
        run_id = RunSpec.from_dict(spec).run_id
        if run_id != record.get("run_id"):
            # the stored id, which a sweep of the old command still names (an earlier migration of the chain may
            # have moved the run already: its first id is the one to keep)
            info = record.get("method_info") or {}
            first = info.get("previous_run_id", record.get("run_id"))
            out.update(run_id=run_id, method_info={**info, "previous_run_id": first})
        out["spec"] = spec
    return out


MIGRATIONS: dict[int, Callable[[dict[str, Any], UpgradeContext], dict[str, Any]]] = {2: to_schema_2, 3: to_schema_3}


def upgrade(record: dict[str, Any], context: UpgradeContext) -> dict[str, Any]:
    """``record`` (JSON of any older schema) brought to ``SCHEMA_VERSION`` by each migration in turn."""
    version = record.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"schema version {version!r} cannot be upgraded (this grain-bench writes {SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        record = MIGRATIONS[target](record, context)
    return record
