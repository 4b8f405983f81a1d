"""Physically compacted models: ``compact(model, masks)`` removes every pruned unit, ``save_pruned`` writes a portable
directory (config with the per-layer shape, safetensors, tokenizer, the modeling file) and ``load_pruned`` reads it.

The compact model is a ``modeling_pruned_bert`` class: transformers' embeddings, pooler and task head, with an encoder
whose layers have their own widths. Its outputs equal the masked model's (see ``tests/test_compact.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, NamedTuple

import torch

from grain_bench.errors import UsageError
from grain_bench.files import ordinary_permissions
from grain_bench.heads import HEADS, compact_classes
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.shape import ModelShape
from grain_bench.version import __version__

MODELING_FILE = "modeling_pruned_bert.py"
METADATA_FILE = "grain_bench.json"
#: Compact-model format versions ``load_pruned`` reads. Format 2 (``modeling_pruned_bert.FORMAT_VERSION``) has format
#: 1's config and weights; only the modeling file changed (it no longer carries grain-bench's training and runtime
#: hooks), and a folder carries its own, which ``trust_remote_code`` uses.
READABLE_FORMATS = (1, 2)

# transformers class name of the source model -> compact class name (same head, same forward signature): one per
# task head (grain_bench.heads) and the bare encoder.
HEAD_CLASSES = compact_classes()
# what a saved folder's config tells transformers' Auto classes to load (trust_remote_code): one class per head
AUTO_MAP = {"AutoConfig": "modeling_pruned_bert.PrunedBertConfig", "AutoModel": "modeling_pruned_bert.PrunedBertModel",
            **{head.auto_class: f"modeling_pruned_bert.{head.compact_class}" for head in HEADS.values()}}


def _modeling():
    from grain_bench import modeling_pruned_bert

    return modeling_pruned_bert


def _compact_class(model):
    modeling = _modeling()
    name = type(model).__name__
    if isinstance(model, modeling.PrunedBertPreTrainedModel):
        raise UsageError(f"{name} is already compact; compact the masked dense model instead")
    if getattr(model.config, "model_type", None) != "bert" or name not in HEAD_CLASSES:
        raise UsageError(f"compact() supports BERT models with these heads: {', '.join(HEAD_CLASSES)}; got {name} "
                         f"(model_type {getattr(model.config, 'model_type', None)!r})")
    return getattr(modeling, HEAD_CLASSES[name])


def can_compact(model) -> bool:
    """Whether ``compact`` takes this model (a dense BERT with one of the supported heads)."""
    try:
        _compact_class(model)
    except UsageError:
        return False
    return True


def compact_config(config, shape: ModelShape):
    """A ``PrunedBertConfig`` from a dense BERT config and the compact shape."""
    modeling = _modeling()
    values = config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "layer_shapes", "original_head_dim"):
        values.pop(key, None)
    layer_shapes = [{"heads": [list(h) for h in layer.heads], "ffn_dim": layer.ffn_dim} for layer in shape.layers]
    out = modeling.PrunedBertConfig(layer_shapes=layer_shapes, original_head_dim=shape.original_head_dim, **values)
    out._attn_implementation = "sdpa"  # the compact encoder always calls SDPA; the masks are built for it
    return out


def compact(model, masks: UnitMasks, space: MaskSpace | None = None):
    """A model with the same task head whose encoder keeps only the units ``masks`` keep (outputs unchanged)."""
    cls = _compact_class(model)
    space = space or MaskSpace.from_config(model.config)
    if tuple(masks.qk.shape) != space.shapes()["qk"] or tuple(masks.ffn.shape) != space.shapes()["ffn"]:
        raise UsageError(f"masks of shape qk {tuple(masks.qk.shape)}, ffn {tuple(masks.ffn.shape)} do not fit the "
                         f"model's "
                         f"mask space {space.shapes()}")
    shape = masks.model_shape(space)
    config = compact_config(model.config, shape)
    reference = next(model.parameters())
    with torch.device("meta"):  # nothing is initialised: every tensor is copied in below
        out = cls(config)
    dense = model.state_dict()
    state = {k: v for k, v in dense.items() if ".encoder." not in f".{k}"}
    with torch.no_grad():
        state.update({name: gather(pieces, dense) for name, pieces in encoder_sources(model, masks, space).items()})
    expected = set(out.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    # Non-persistent buffers (position ids) are not in state_dict; anything else missing is a bug here.
    if missing or unexpected:
        raise UsageError(f"compact state does not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    out.load_state_dict(state, assign=True)
    _restore_buffers(out, model)
    out.to(device=reference.device)
    out.train(model.training)
    return out


def _restore_buffers(out, model) -> None:
    # Buffers that state_dict skips (position_ids, token_type_ids) were created on meta: copy them from the source.
    source = dict(model.named_buffers())
    for name, buffer in list(out.named_buffers()):
        if buffer.is_meta:
            module_name, _, attr = name.rpartition(".")
            module = out.get_submodule(module_name) if module_name else out
            module._buffers[attr] = source[name].clone()


class Piece(NamedTuple):
    """Part of a compact tensor: ``source`` (a state-dict key of the dense model) at ``positions`` along ``dim``
    (None: the whole tensor). A compact tensor is its pieces concatenated along their ``dim``."""

    source: str
    dim: int
    positions: torch.Tensor | None


def encoder_sources(model, masks: UnitMasks, space: MaskSpace) -> dict[str, list[Piece]]:
    """Where every compact encoder tensor comes from in the dense model, keyed by the compact state-dict name (the
    one description ``compact`` builds from and compact training copies optimizer state and weights back with)."""
    from grain_bench.arch import get_arch

    arch = get_arch(model.config)
    prefix = f"{model.base_model_prefix}.encoder." if type(model).__name__ != "BertModel" else "encoder."
    sources: dict[str, list[Piece]] = {}
    head_dim = space.head_dim
    for index in range(space.num_layers):
        p = f"{prefix}layer.{index}."  # the same layer prefix in both models; the module paths below differ
        q, k, v, o, w1, w2 = (p + path for path in (arch.query, arch.key, arch.value, arch.attn_out, arch.ffn_in,
                                                    arch.ffn_out))
        q_rows, v_rows = [], []
        for head in masks.kept_head_indices(index):
            base = head * head_dim
            q_rows += [base + j for j in masks.qk[index, head].nonzero().flatten().tolist()]
            v_rows += [base + j for j in masks.vo[index, head].nonzero().flatten().tolist()]
        if v_rows:
            qi, vi = torch.tensor(q_rows, dtype=torch.long), torch.tensor(v_rows, dtype=torch.long)
            for kind in ("weight", "bias"):
                sources[f"{p}attention.qkv.{kind}"] = [Piece(f"{q}.{kind}", 0, qi), Piece(f"{k}.{kind}", 0, qi),
                                                        Piece(f"{v}.{kind}", 0, vi)]
            sources[p + "attention.dense.weight"] = [Piece(f"{o}.weight", 1, vi)]
            sources[p + "attention.dense.bias"] = [Piece(f"{o}.bias", 0, None)]
        else:
            sources[p + "attention.dense_bias"] = [Piece(f"{o}.bias", 0, None)]
        fi = masks.ffn[index].nonzero().flatten()
        if fi.numel():
            sources[p + "ffn.intermediate.weight"] = [Piece(f"{w1}.weight", 0, fi)]
            sources[p + "ffn.intermediate.bias"] = [Piece(f"{w1}.bias", 0, fi)]
            sources[p + "ffn.dense.weight"] = [Piece(f"{w2}.weight", 1, fi)]
            sources[p + "ffn.dense.bias"] = [Piece(f"{w2}.bias", 0, None)]
        else:
            sources[p + "ffn.dense_bias"] = [Piece(f"{w2}.bias", 0, None)]
        for block, path in (("attention", arch.attn_out), ("ffn", arch.ffn_out)):
            norm = p + path.rsplit(".", 1)[0] + ".LayerNorm"
            for kind in ("weight", "bias"):
                sources[f"{p}{block}.LayerNorm.{kind}"] = [Piece(f"{norm}.{kind}", 0, None)]
    return sources


def gather(pieces: list[Piece], tensors) -> torch.Tensor:
    """The compact tensor made of ``pieces`` of ``tensors`` (a dense state dict, or any tensors of the same shapes
    under the same keys: optimizer moments)."""
    parts = [tensors[p.source] if p.positions is None
             else tensors[p.source].index_select(p.dim, p.positions.to(tensors[p.source].device)) for p in pieces]
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=pieces[0].dim)).clone()


def scatter(pieces: list[Piece], value: torch.Tensor, tensors) -> None:
    """Write the compact tensor ``value`` back into the places of ``tensors`` it was gathered from (in place)."""
    begin = 0
    for p in pieces:
        target = tensors[p.source]
        if p.positions is None:
            target.copy_(value)
            continue
        part = value.narrow(p.dim, begin, len(p.positions))
        target.index_copy_(p.dim, p.positions.to(target.device), part)
        begin += len(p.positions)


def model_shape_of(model) -> ModelShape:
    """The ``ModelShape`` of a compact model, read from its config."""
    config = model.config
    from grain_bench.shape import LayerShape

    layers = tuple(LayerShape(tuple((int(q), int(v)) for q, v in layer["heads"]), int(layer["ffn_dim"]))
                   for layer in config.layer_shapes)
    return ModelShape(config.hidden_size, layers, config.vocab_size, config.max_position_embeddings,
                      config.type_vocab_size, config.original_head_dim)


def save_pruned(model, path: str, tokenizer=None, metadata: dict[str, Any] | None = None) -> str:
    """Write a compact model as a self-contained directory (atomically: a temp dir renamed into place)."""
    modeling = _modeling()
    if not isinstance(model, modeling.PrunedBertPreTrainedModel):
        raise UsageError(f"save_pruned expects a compact model (from grain_bench.compact), got {type(model).__name__}")
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        model.config.auto_map = dict(AUTO_MAP)
        # the folder gets this grain-bench's modeling file, so it is in this format whatever the model was loaded from
        model.config.pruned_format_version = modeling.FORMAT_VERSION
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(modeling.__file__, os.path.join(tmp, MODELING_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = {"format": "grain-bench-pruned", "format_version": modeling.FORMAT_VERSION,
                "shape": model_shape_of(model).to_dict(), **(metadata or {})}
        with open(os.path.join(tmp, METADATA_FILE), "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True, default=str)
        ordinary_permissions(tmp)
        if os.path.exists(path):  # replace an older copy without ever leaving a half-written directory at ``path``
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "model"))
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_pruned(path: str, device: str | torch.device | None = None, runtime: str = "eager",
                example_inputs: dict[str, torch.Tensor] | None = None):
    """Load a directory written by ``save_pruned`` (or by a grain-bench run) as its compact model, in eval mode.

    ``runtime`` (a registered ``grain_bench.runtimes.Runtime`` of the device): ``eager`` returns the module;
    ``compile``, ``aoti``, ``ragged``, ``onnx`` (CPU) or ``cuda_graph`` (CUDA) return it prepared for inference on
    ``example_inputs`` (default: a batch of 2 x 16 tokens), checked to reproduce the module's outputs."""
    from grain_bench.runtimes import get_runtime

    chosen = get_runtime(runtime, str(device or "cpu"))
    chosen.check()
    modeling = _modeling()
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"{path!r} is not a saved compact model: no config.json there")
    with open(config_path) as handle:
        config = json.load(handle)
    if config.get("model_type") != modeling.PrunedBertConfig.model_type:
        raise UsageError(f"{path!r} holds a {config.get('model_type')!r} model, not a grain-bench compact model "
                         f"(model_type {modeling.PrunedBertConfig.model_type!r})")
    version = config.get("pruned_format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_FORMATS:
        readable = " and ".join(str(v) for v in READABLE_FORMATS)
        raise UsageError(f"{path!r} holds a compact model in format version {version!r}; this grain-bench "
                         f"{__version__} reads formats {readable}: load it with the grain-bench that wrote it (its "
                         f"{MODELING_FILE} is in the folder: AutoModel.from_pretrained(path, trust_remote_code=True) "
                         f"uses that one)")
    names = config.get("architectures") or ["PrunedBertModel"]
    cls = getattr(modeling, names[0], None)
    if cls is None:
        raise UsageError(f"unknown compact architecture {names[0]!r} in {config_path}")
    model = cls.from_pretrained(path)
    if device is not None:
        model.to(device)
    model.eval()
    from grain_bench.runtimes import example_inputs as default_inputs

    inputs = example_inputs or default_inputs(model.config, next(model.parameters()).device)
    return chosen.prepare(model, inputs) if runtime != "eager" else model
