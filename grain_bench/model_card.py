"""The model card (``README.md``) of a saved compact model, written from its run record after scoring."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from grain_bench.files import write_atomically
from grain_bench.heads import HEADS
from grain_bench.records import RunRecord
from grain_bench.types import Recipe
from grain_bench.version import __version__

#: hub ids of the named backbones' weights, for the card's ``base_model``
BASE_MODELS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
#: licences of base models the card can name (the compact model is a derived work of its base's weights)
LICENSES = {"sentence-transformers/all-MiniLM-L6-v2": "apache-2.0"}
CARD_FILE = "README.md"


@dataclass(frozen=True)
class CardDataset:
    """The data a run was scored on, as the Hub's ``model-index`` names it: the dataset id (the task's hub dataset,
    else the task's name), its config, the scored split and its revision (the hub commit, or the local files'
    content hash: the record's data identity)."""

    id: str
    config: str | None = None
    split: str | None = None
    revision: str | None = None

    @classmethod
    def of(cls, task, data: str) -> CardDataset:
        """The card's dataset of ``task`` (a ``grain_bench.task.Task``) scored on the data identity ``data``."""
        hub_id = getattr(task, "hub_id", None)
        revision = data.rsplit("@", 1)[1] if data.startswith("hub:") and "@" in data else (data or None)
        return cls(hub_id or task.name, getattr(task, "hub_config", "") or None, getattr(task, "eval_split", None),
                   revision)


def base_model(backbone: str, named: bool) -> str | None:
    """The hub id a card names as ``base_model``: a named backbone's weights, a hub id itself, None for a folder."""
    if named:
        return BASE_MODELS.get(backbone)
    return None if os.path.exists(os.path.expanduser(backbone)) else backbone


def _head(head: str, attribute: str, fallback: str) -> str:
    """An attribute of the task head (``grain_bench.heads``), or ``fallback`` for a head this version does not know."""
    return getattr(HEADS[head], attribute) if head in HEADS else fallback


def _number(value: float | None) -> float:
    return float("nan") if value is None else value


def _scores(scores: dict, digits: int = 4) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" if isinstance(v, (int, float)) else f"{k} -" for k, v in scores.items())


def model_card(record: RunRecord, head: str, base: str | None = None, dataset: CardDataset | None = None) -> str:
    """The Markdown card of the model a run saved, with the Hub's front matter (``huggingface_hub.ModelCardData``:
    ``model-index`` results, ``datasets``, ``metrics``, ``license`` where known); ``base`` is its hub base model,
    ``dataset`` what it was scored on (default: the task's name)."""
    table = ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in _facts(record, base))]
    return "\n".join(["---", _front_matter(record, head, base, dataset).strip(), "---", ""]
                     + _body(record, head, table))


def _front_matter(record: RunRecord, head: str, base: str | None, dataset: CardDataset | None) -> str:
    """The card's YAML front matter, as the Hub reads it (``ModelCard.load(...).data.eval_results``)."""
    from huggingface_hub import EvalResult, ModelCardData

    spec = record.spec
    dataset = dataset or CardDataset(spec.task, revision=spec.data or None)
    pipeline = _head(head, "pipeline_tag", "feature-extraction")
    scores = {name: value for name, value in record.scores.items() if isinstance(value, (int, float))}
    results = [EvalResult(task_type=pipeline, dataset_type=dataset.id, dataset_name=f"{spec.task} v{spec.task_version}",
                          dataset_config=dataset.config, dataset_split=dataset.split,
                          dataset_revision=dataset.revision, metric_type=name, metric_name=name,
                          metric_value=float(value)) for name, value in scores.items()]
    data = ModelCardData(library_name="transformers", pipeline_tag=pipeline, base_model=base,
                         license=LICENSES.get(base or ""), datasets=[dataset.id], metrics=sorted(scores) or None,
                         tags=["grain-bench", "structured-pruning", spec.method],
                         model_name=f"{spec.backbone}-{spec.task}-{spec.method}-{record.run_id}" if results else None,
                         eval_results=results or None)
    return data.to_yaml()


def _facts(record: RunRecord, base: str | None) -> list[tuple[str, str]]:
    """The card's table: task, backbone, method, densities, parameters, scores, FLOPs, latency, recipe, run."""
    spec, density, params = record.spec, record.density, record.params
    options_text = ", ".join(f"{k}={v}" for k, v in sorted(spec.method_options.items())) or "defaults"
    rows = [
        ("task", f"{spec.task} v{spec.task_version} (data: {spec.data}); primary metric {record.primary_metric}"),
        ("backbone", spec.backbone + (f" ({base})" if base and base != spec.backbone else "")),
        ("method", f"`{spec.method}` ({options_text})"),
        ("density", f"target {spec.target_density:g}, achieved {_number(density.achieved):.4f} of "
                    f"the unit cost; {_number(density.encoder_params) * 100:.1f}% of the encoder's "
                    f"parameters kept"),
        ("parameters", f"{params.total or 0:,} in all; encoder {params.encoder or 0:,} of "
                       f"{params.dense_encoder or 0:,}"),
        ("scores", _scores(record.scores) + f" (teacher: {_scores(record.teacher_scores)}"
                   + (f"; trivial predictor: {_scores(record.chance_scores)}" if record.chance_scores else "") + ")"),
        ("FLOPs", f"{_number(record.flops.predicted_speedup):.2f}x fewer than the dense model at "
                  f"{record.flops.seq_len or '?'} tokens"),
    ]
    compact = record.latency_of("compact")
    if compact:
        rows.append(("latency", f"{_number(compact.median_ms):.1f} ms per batch, {compact.speedup or 0:.2f}x faster "
                                f"than the dense model, timed side by side in the run ({compact.device}, "
                                f"{compact.dtype}, batch {compact.batch} x {compact.seq_len}, {compact.threads} "
                                f"threads)"))
    try:
        caption = Recipe.parse(spec.recipe).caption()
    except Exception:  # a recipe field this version does not know
        caption = json.dumps(spec.recipe, sort_keys=True)
    return rows + [("recipe", caption), ("run", f"`{record.run_id}`, {record.created}, grain-bench {__version__}")]


def _body(record: RunRecord, head: str, table: list[str]) -> list[str]:
    """The card below its front matter: what the model is, the table, how to load it, the record's warnings."""
    spec, auto = record.spec, _head(head, "auto_class", "AutoModel")
    body = [
        f"# {spec.method} at {spec.target_density:g} density: compact {spec.backbone} for {spec.task}", "",
        f"A physically pruned encoder made with grain-bench, a benchmark for structured pruning (GRAIN, Yang et al., "
        f"ACL 2023, and its rivals), by the `{spec.method}` method under grain-bench's shared distillation: every "
        f"pruned attention unit and FFN neuron is removed, each layer keeps its own heads and widths. Its outputs were "
        f"checked against the masked model before it was timed and scored (max |logit difference| "
        f"{record.method_info.get('compact', {}).get('max_abs_logit_diff', '?')}).",
        "", *table, "", "## Use", "", "```python",
        f"from transformers import AutoTokenizer, {auto}", "",
        "path = \"path/to/this/folder\"  # or its Hub id",
        "tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)",
        f"model = {auto}.from_pretrained(path, trust_remote_code=True)  # grain-bench not needed",
        "# or, with grain-bench installed: grain_bench.load_pruned(\"path/to/this/folder\")", "```", "",
        "`trust_remote_code=True` runs `modeling_pruned_bert.py` from this folder: it imports only torch and "
        "transformers. The tokenizer needs it too: without it transformers asks whether to run the folder's code "
        "(the config names it) and waits.", "",
    ]
    if record.warnings:
        body += ["## Warnings", "", *(f"- {w}" for w in record.warnings), ""]
    return body


def write_model_card(folder: str, record: RunRecord, head: str, base: str | None = None,
                     dataset: CardDataset | None = None) -> str:
    """Write ``README.md`` into a saved model's folder (atomically); returns its path."""
    path = os.path.join(folder, CARD_FILE)
    write_atomically(path, model_card(record, head, base, dataset).encode("utf-8"))
    return path
