"""Where each supported architecture keeps its encoder layers and projections: the one list of encoder families
grain-bench masks and compacts (``backbones.check_architecture`` refuses every other). A family is supported when its
row is here *and* the saved modeling file (``modeling_pruned_bert.py``) has compact classes for it; today that is BERT
(MiniLM, TinyBERT and other BERT checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from grain_bench.errors import UsageError


@dataclass(frozen=True)
class ArchMap:
    """Attribute paths, relative to one encoder layer, of the modules the mask space touches."""

    layers: str = "encoder.layer"  # relative to model.base_model
    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attn_out: str = "attention.output.dense"
    ffn_in: str = "intermediate.dense"
    ffn_out: str = "output.dense"
    #: the embeddings' LayerNorm, relative to model.base_model (where hidden-dimension masks start)
    embeddings_norm: str = "embeddings.LayerNorm"


ARCHITECTURES: dict[str, ArchMap] = {
    "bert": ArchMap(),
}


def get_arch(config) -> ArchMap:
    """The ``ArchMap`` for a transformers config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UsageError(f"architecture {model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def layer_norm_path(output_path: str) -> str:
    """The LayerNorm after a block whose output projection is at ``output_path`` (BERT's ``...output.LayerNorm``)."""
    return output_path.rsplit(".", 1)[0] + ".LayerNorm"


def resolve(module, path: str):
    """Follow a dotted attribute path."""
    for part in path.split("."):
        module = getattr(module, part)
    return module


def encoder_layers(model, arch: ArchMap | None = None):
    """The list of encoder layer modules of a transformers model (any task head)."""
    arch = arch or get_arch(model.config)
    return resolve(model.base_model, arch.layers)
