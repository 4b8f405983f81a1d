"""Cost models: what a compact encoder of a given shape costs, as one linear function of its shape's features.

``cost(shape) = sum(coefficient[f] * feature[f])`` over the features of ``FEATURES``: a constant (embeddings, task
head, LayerNorms and residuals, whatever pruning cannot remove), the layers that keep an attention block, the heads
kept, the heads with query units (a head without them attends uniformly: no scores, no softmax), the query and value
units, the layers that keep an FFN block and the FFN neurons. A budget is a fraction of the dense model's cost.

- ``parameter_cost(space)``: today's cost (query 2d+2, value 2d+1, FFN 2d+1 parameters per unit, nothing fixed); its
  fraction is the density every table shows, and the one the GRAIN reference prunes against;
- ``flops_cost(space, seq_len)``: ``ModelShape.total_flops`` in this form (a FLOPs constraint, as Kwon et al. use);
- a measured latency cost (``grain-bench profile``, ``grain_bench.profile``): the coefficients fitted to compact
  models timed on one device, runtime, batch and length, where the block and head terms are the fixed costs that make
  GRAIN's many narrow heads slower than their FLOPs.

A cost model with fixed terms is what lets an allocator (``grain_bench.allocate``) prune to a speed: the first unit kept
in a head pays the head's cost, the first in an empty block the block's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.files import grain_bench_home, write_atomically

#: the features of a shape a cost is linear in, in the order of ``features``
FEATURES = ("constant", "attention_blocks", "heads", "query_heads", "qk_units", "vo_units", "ffn_blocks",
            "ffn_units")
#: the features that are fixed costs (paid once per block or head, whatever its width)
FIXED = ("attention_blocks", "heads", "query_heads", "ffn_blocks")
#: the features that are units (their work grows with the hidden width they read and write)
UNIT_TERMS = ("qk_units", "vo_units", "ffn_units")
FORMAT = "grain-bench-cost-model"
FORMAT_VERSION = 1


def features(shape) -> dict[str, float]:
    """The features of a ``ModelShape`` (``grain_bench.shape``): counts of blocks, heads and units."""
    layers = shape.layers
    return {
        "constant": 1.0,
        "attention_blocks": float(sum(1 for layer in layers if layer.heads)),
        "heads": float(sum(len(layer.heads) for layer in layers)),
        "query_heads": float(sum(1 for layer in layers for qk in layer.qk_dims if qk > 0)),
        "qk_units": float(sum(sum(layer.qk_dims) for layer in layers)),
        "vo_units": float(sum(sum(layer.vo_dims) for layer in layers)),
        "ffn_blocks": float(sum(1 for layer in layers if layer.ffn_dim > 0)),
        "ffn_units": float(sum(layer.ffn_dim for layer in layers)),
    }


@dataclass(frozen=True)
class CostModel:
    """A linear cost of compact shapes of one backbone (``backbone``: its mask-space sizes), with what it measures
    (``unit``: parameters, FLOPs or ms) and where it was measured (``setting``: device, runtime, batch, length, ...)."""

    name: str
    unit: str
    coefficients: dict[str, float]
    backbone: dict[str, int]  # num_layers, num_heads, head_dim, ffn_dim, hidden of the space it is for
    setting: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)  # how well it predicts (profiling reports)

    def cost(self, shape) -> float:
        """The cost of a compact shape (at its hidden width: ``at_hidden``)."""
        values = features(shape)
        coefficients = self.at_hidden(shape.hidden)
        return sum(coefficients.get(name, 0.0) * values[name] for name in FEATURES)

    def at_hidden(self, hidden: int) -> dict[str, float]:
        """The coefficients for shapes whose residual stream keeps ``hidden`` dimensions (hidden-dimension pruning).
        At the backbone's width they are the model's own. The parameter and FLOPs costs are formulas of the width and
        are recomputed at it exactly. A measured model was fitted at the full width only: its unit terms are scaled by
        ``hidden`` / the full width (a unit's GEMM work grows with the width it reads and writes, and is most of its
        time at the lengths measured) and its fixed terms are kept, so it predicts conservatively until narrower
        shapes are profiled."""
        full = self.backbone.get("hidden")
        if not full or hidden == full:
            return self.coefficients
        from grain_bench.masks import MaskSpace

        sizes = {k: v for k, v in self.backbone.items() if k in ("num_layers", "num_heads", "head_dim", "ffn_dim")}
        narrow = MaskSpace(hidden=hidden, **sizes)
        if self.name == "params":
            return parameter_cost(narrow).coefficients
        if self.name == "flops" and "seq_len" in self.setting:
            return flops_cost(narrow, int(self.setting["seq_len"])).coefficients
        ratio = hidden / full
        return {name: value * ratio if name in UNIT_TERMS else value for name, value in self.coefficients.items()}

    def dense_cost(self, space) -> float:
        """The cost of the dense encoder of ``space``."""
        return self.cost(space.dense_shape())

    def fraction(self, masks, space) -> float:
        """The cost of ``masks``' compact model as a fraction of the dense one's."""
        return self.cost(masks.model_shape(space)) / self.dense_cost(space)

    def speedup(self, masks, space) -> float:
        """The predicted speedup of ``masks``' compact model over the dense one (1 / ``fraction``)."""
        return 1.0 / self.fraction(masks, space)

    @property
    def has_fixed_costs(self) -> bool:
        """True when a block or a head costs something beyond its units (a latency model, FLOPs' softmax)."""
        return any(self.coefficients.get(name, 0.0) for name in FIXED)

    @property
    def key(self) -> str:
        """The model's identity, stored in run specs (``<name>:<hash of its content>``)."""
        content = json.dumps({"name": self.name, "unit": self.unit, "coefficients": self.coefficients,
                              "backbone": self.backbone, "setting": self.setting}, sort_keys=True)
        return f"{self.name}:{hashlib.sha256(content.encode()).hexdigest()[:12]}"

    def check_space(self, space, what: str = "cost model") -> None:
        """``UsageError`` unless the model was made for an encoder of ``space``'s sizes."""
        sizes = _sizes(space)
        if self.backbone != sizes:
            raise UsageError(f"{what} {self.key} is for an encoder of {_describe(self.backbone)}, not "
                             f"{_describe(sizes)}: profile this backbone (grain-bench profile --backbone ...)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (what ``grain-bench profile`` writes)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": self.name, "unit": self.unit,
                "coefficients": dict(self.coefficients), "backbone": dict(self.backbone),
                "setting": dict(self.setting), "fit": dict(self.fit), "key": self.key}

    def to_json(self) -> bytes:
        """The file ``grain-bench profile`` writes."""
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str = "cost model") -> CostModel:
        """Inverse of ``to_dict``; ``UsageError`` naming ``path`` when it is not a cost model of this version."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UsageError(f"{path} is not a grain-bench cost model (expected a JSON object with format {FORMAT!r}, "
                             f"as `grain-bench profile` writes)")
        if data.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{path} is a cost model of format {data.get('format_version')!r}; this grain-bench "
                             f"reads format {FORMAT_VERSION}: profile again")
        coefficients = data.get("coefficients")
        if not isinstance(coefficients, dict) or set(coefficients) - set(FEATURES) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in coefficients.values()):
            raise UsageError(f"{path}: coefficients must be finite non-negative numbers for {', '.join(FEATURES)}")
        model = cls(str(data.get("name")), str(data.get("unit")), {k: float(v) for k, v in coefficients.items()},
                    {k: int(v) for k, v in dict(data.get("backbone") or {}).items()}, dict(data.get("setting") or {}),
                    dict(data.get("fit") or {}))
        if data.get("key") not in (None, model.key):
            raise UsageError(f"{path}: its key {data.get('key')!r} does not match its content ({model.key}): the file "
                             f"was edited; profile again")
        return model


def _sizes(space) -> dict[str, int]:
    return {"num_layers": space.num_layers, "num_heads": space.num_heads, "head_dim": space.head_dim,
            "ffn_dim": space.ffn_dim, "hidden": space.hidden}


def _describe(sizes: dict[str, int]) -> str:
    return (f"{sizes.get('num_layers')} layers x {sizes.get('num_heads')} heads of {sizes.get('head_dim')}, FFN "
            f"{sizes.get('ffn_dim')}, hidden {sizes.get('hidden')}")


def parameter_cost(space) -> CostModel:
    """Today's cost: the parameters each unit removes (query 2d+2, value 2d+1, FFN 2d+1); nothing is fixed."""
    costs = space.unit_costs
    return CostModel("params", "parameters", {"qk_units": float(costs["qk"]), "vo_units": float(costs["vo"]),
                                              "ffn_units": float(costs["ffn"])}, _sizes(space))


def flops_cost(space, seq_len: int) -> CostModel:
    """``ModelShape.total_flops`` at ``seq_len`` tokens as a linear cost (per-head softmax work as a fixed cost)."""
    d, t = space.hidden, seq_len
    return CostModel("flops", "FLOPs per sequence", {
        "constant": float(5 * t * d + space.num_layers * 10 * t * d),
        "query_heads": float(7 * t * t),
        "qk_units": float(4 * t * d + 2 * t * t), "vo_units": float(4 * t * d + 2 * t * t),
        "ffn_units": float(4 * t * d + 8 * t)}, _sizes(space), {"seq_len": seq_len})


def load_cost_model(path: str) -> CostModel:
    """A cost model from a JSON file written by ``grain-bench profile``; ``UsageError`` naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"--cost-model {path!r} does not exist; write one with grain-bench profile") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--cost-model {path!r} cannot be read as JSON ({exc})") from None
    return CostModel.from_dict(data, repr(path))


def cost_model_dir() -> str:
    """Where cost models are kept (``$GRAIN_BENCH_HOME/cost-models``, by default in the user's cache folder)."""
    return os.path.join(grain_bench_home(), "cost-models")


#: where a results directory keeps the cost models its runs were pruned with (``<results>/cost-models/<key>.json``)
RESULTS_FOLDER = "cost-models"


def stored_path(key: str) -> str:
    """The path of cost model ``key`` relative to a results directory."""
    return os.path.join(RESULTS_FOLDER, key.replace(":", "-") + ".json")


def save_cost_model(model: CostModel, path: str) -> str:
    """Write ``model`` as JSON to ``path`` (atomically, its folder made if needed); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, model.to_json())
    return path


def store_in_results(results_dir: str, model: CostModel) -> str:
    """Keep ``model`` in ``results_dir`` (atomically, once: a model's file never changes); returns its relative
    path. Runs read it from there, wherever they execute, and a record names it."""
    relative = stored_path(model.key)
    path = os.path.join(results_dir, relative)
    if not os.path.isfile(path):
        save_cost_model(model, path)
    return relative


def load_from_results(results_dir: str, key: str) -> CostModel:
    """The cost model ``key`` a run was planned with, from ``results_dir``; ``GrainBenchError`` when it is missing or
    is not that model."""
    from grain_bench.errors import GrainBenchError

    path = os.path.join(results_dir, stored_path(key))
    try:
        with open(path, encoding="utf-8") as handle:
            model = CostModel.from_dict(json.load(handle), path)
    except (OSError, ValueError, UsageError) as exc:
        raise GrainBenchError(f"the cost model {key} of this run cannot be read from {path} ({exc}); plan the runs "
                              f"again (the same command) to store it") from None
    if model.key != key:
        raise GrainBenchError(f"{path} holds cost model {model.key}, not {key} that the run was planned with")
    return model
