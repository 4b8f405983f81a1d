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
from grain_bench.files import ordinary_permissions, sha256_of_file
from grain_bench.heads import HEADS, compact_classes, sequence_input_weights
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.shape import ModelShape
from grain_bench.version import __version__

MODELING_FILE = "modeling_pruned_bert.py"
METADATA_FILE = "grain_bench.json"
METADATA_FORMAT = "grain-bench-pruned"
#: the key of ``grain_bench.json`` that maps each hashed file of the folder to its SHA-256 (folders saved before it
#: was written load unverified)
HASHES_KEY = "sha256"
#: Compact-model format versions ``load_pruned`` reads. Format 2 (``modeling_pruned_bert.FORMAT_VERSION``) has format
#: 1's config and weights; only the modeling file changed (it no longer carries grain-bench's training and runtime
#: hooks), and a folder carries its own, which ``trust_remote_code`` uses.
#: Format 3 adds ``pooler_size`` for a residual stream narrower than the pooler (hidden-dimension pruning).
READABLE_FORMATS = (1, 2, 3)

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
    if shape.hidden != config.hidden_size:  # hidden dimensions pruned: the pooler maps back to the original width
        values.update(hidden_size=shape.hidden, pooler_size=config.hidden_size)
    out = modeling.PrunedBertConfig(layer_shapes=layer_shapes, original_head_dim=shape.original_head_dim, **values)
    out._attn_implementation = "sdpa"  # the compact encoder always calls SDPA; the masks are built for it
    return out


def compact(model, masks: UnitMasks, space: MaskSpace | None = None):
    """A model with the same task head whose encoder keeps only the units ``masks`` keep (outputs unchanged)."""
    cls = _compact_class(model)
    space = space or MaskSpace.from_config(model.config)
    if (tuple(masks.qk.shape) != space.shapes()["qk"] or tuple(masks.ffn.shape) != space.shapes()["ffn"]
            or (masks.hidden is not None and tuple(masks.hidden.shape) != (space.hidden,))):
        hidden = "" if masks.hidden is None else f", hidden {tuple(masks.hidden.shape)}"
        raise UsageError(f"masks of shape qk {tuple(masks.qk.shape)}, ffn {tuple(masks.ffn.shape)}{hidden} do not fit "
                         f"the model's mask space {space.shapes()} (hidden {space.hidden})")
    if masks.hidden is not None and not bool(masks.hidden.any()):
        raise UsageError("the masks keep no hidden dimension: a compact model needs at least one")
    shape = masks.model_shape(space)
    config = compact_config(model.config, shape)
    reference = next(model.parameters())
    with torch.device("meta"):  # nothing is initialised: every tensor is copied in below
        out = cls(config)
    dense = model.state_dict()
    state = {k: v for k, v in dense.items() if ".encoder." not in f".{k}"}
    with torch.no_grad():
        state.update({name: gather(pieces, dense) for name, pieces in model_sources(model, masks, space).items()})
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
    (None: the whole tensor), and, where hidden dimensions are pruned, at the kept ones ``hidden`` along
    ``hidden_dim``. A compact tensor is its pieces concatenated along their ``dim``."""

    source: str
    dim: int
    positions: torch.Tensor | None
    hidden_dim: int = 0
    hidden: torch.Tensor | None = None


def _kept_hidden(masks: UnitMasks) -> torch.Tensor | None:
    """The kept hidden dimensions' indices, or None when the masks prune none."""
    return masks.hidden.nonzero().flatten() if masks.prunes_hidden() else None  # type: ignore[union-attr]


def _prefix(model) -> str:
    return f"{model.base_model_prefix}." if type(model).__name__ != "BertModel" else ""


def encoder_sources(model, masks: UnitMasks, space: MaskSpace) -> dict[str, list[Piece]]:
    """Where every compact encoder tensor comes from in the dense model, keyed by the compact state-dict name (the
    one description ``compact`` builds from and compact training copies optimizer state and weights back with)."""
    from grain_bench.arch import get_arch

    arch = get_arch(model.config)
    prefix = f"{_prefix(model)}encoder."
    sources: dict[str, list[Piece]] = {}
    for index in range(space.num_layers):
        sources.update(_layer_sources(f"{prefix}layer.{index}.", arch, masks, index, space.head_dim))
    return sources


class _Cut(NamedTuple):
    """Pieces of one layer's tensors, their residual-stream axis cut to the kept hidden dimensions (``hidden``)."""

    hidden: torch.Tensor | None

    def rows(self, source: str, positions) -> Piece:
        """A weight's output rows at ``positions``, its inputs at the kept dimensions."""
        return Piece(source, 0, positions, 1, self.hidden)

    def columns(self, source: str, positions) -> Piece:
        """A weight's input columns at ``positions``, its outputs at the kept dimensions."""
        return Piece(source, 1, positions, 0, self.hidden)

    def residual(self, source: str) -> list[Piece]:
        """A vector along the residual stream (an output bias, a LayerNorm's weight or bias)."""
        return [Piece(source, 0, None, 0, self.hidden)]


def _layer_sources(p: str, arch, masks: UnitMasks, index: int, head_dim: int) -> dict[str, list[Piece]]:
    """``encoder_sources`` of one layer (``p``: its prefix, the same in both models; the module paths differ)."""
    from grain_bench.arch import layer_norm_path

    cut = _Cut(_kept_hidden(masks))
    q, k, v, o, w1, w2 = (p + path for path in (arch.query, arch.key, arch.value, arch.attn_out, arch.ffn_in,
                                                arch.ffn_out))
    sources: dict[str, list[Piece]] = {}
    q_rows, v_rows = [], []
    for head in masks.kept_head_indices(index):
        q_rows += [head * head_dim + j for j in masks.qk[index, head].nonzero().flatten().tolist()]
        v_rows += [head * head_dim + j for j in masks.vo[index, head].nonzero().flatten().tolist()]
    if v_rows:
        qi, vi = torch.tensor(q_rows, dtype=torch.long), torch.tensor(v_rows, dtype=torch.long)
        sources[f"{p}attention.qkv.weight"] = [cut.rows(f"{q}.weight", qi), cut.rows(f"{k}.weight", qi),
                                                cut.rows(f"{v}.weight", vi)]
        sources[f"{p}attention.qkv.bias"] = [Piece(f"{q}.bias", 0, qi), Piece(f"{k}.bias", 0, qi),
                                              Piece(f"{v}.bias", 0, vi)]
        sources[p + "attention.dense.weight"] = [cut.columns(f"{o}.weight", vi)]
    sources[p + ("attention.dense.bias" if v_rows else "attention.dense_bias")] = cut.residual(f"{o}.bias")
    fi = masks.ffn[index].nonzero().flatten()
    if fi.numel():
        sources[p + "ffn.intermediate.weight"] = [cut.rows(f"{w1}.weight", fi)]
        sources[p + "ffn.intermediate.bias"] = [Piece(f"{w1}.bias", 0, fi)]
        sources[p + "ffn.dense.weight"] = [cut.columns(f"{w2}.weight", fi)]
    sources[p + ("ffn.dense.bias" if fi.numel() else "ffn.dense_bias")] = cut.residual(f"{w2}.bias")
    for block, path in (("attention", arch.attn_out), ("ffn", arch.ffn_out)):
        for kind in ("weight", "bias"):
            sources[f"{p}{block}.LayerNorm.{kind}"] = cut.residual(f"{p}{layer_norm_path(path)}.{kind}")
    return sources


def outside_sources(model, masks: UnitMasks) -> dict[str, list[Piece]]:
    """The tensors outside the encoder that pruned hidden dimensions narrow (none when the masks prune none): the
    embedding tables' columns, the embeddings' LayerNorm, the pooler's input columns and the input columns of a task
    head that reads the sequence output (``grain_bench.heads``); a sequence classifier reads the pooler's output,
    which keeps its width."""
    hidden = _kept_hidden(masks)
    if hidden is None:
        return {}
    names = set(model.state_dict())
    base = _prefix(model)
    sources = {f"{base}embeddings.{table}.weight": [Piece(f"{base}embeddings.{table}.weight", 1, None, 1, hidden)]
               for table in ("word_embeddings", "position_embeddings", "token_type_embeddings")}
    sources.update({f"{base}embeddings.LayerNorm.{kind}": [Piece(f"{base}embeddings.LayerNorm.{kind}", 0, None, 0,
                                                                 hidden)] for kind in ("weight", "bias")})
    for name in sequence_input_weights(type(model).__name__):
        sources[name] = [Piece(name, 1, None, 1, hidden)]
    missing = sorted(set(sources) - names)
    if missing:
        raise UsageError(f"cannot prune hidden dimensions of {type(model).__name__}: it has no {missing[0]}")
    pooler = f"{base}pooler.dense.weight"  # the pooler's output keeps its width (the classifier reads it)
    if pooler in names:
        sources[pooler] = [Piece(pooler, 1, None, 1, hidden)]
    return sources


def model_sources(model, masks: UnitMasks, space: MaskSpace) -> dict[str, list[Piece]]:
    """``encoder_sources`` and ``outside_sources``: every compact tensor that is not a dense tensor as it is."""
    return {**outside_sources(model, masks), **encoder_sources(model, masks, space)}


def _take(piece: Piece, tensors) -> torch.Tensor:
    tensor = tensors[piece.source]
    if piece.hidden is not None:
        tensor = tensor.index_select(piece.hidden_dim, piece.hidden.to(tensor.device))
    if piece.positions is not None:
        tensor = tensor.index_select(piece.dim, piece.positions.to(tensor.device))
    return tensor


def gather(pieces: list[Piece], tensors) -> torch.Tensor:
    """The compact tensor made of ``pieces`` of ``tensors`` (a dense state dict, or any tensors of the same shapes
    under the same keys: optimizer moments)."""
    parts = [_take(p, tensors) for p in pieces]
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=pieces[0].dim)).clone()


def scatter(pieces: list[Piece], value: torch.Tensor, tensors) -> None:
    """Write the compact tensor ``value`` back into the places of ``tensors`` it was gathered from (in place)."""
    begin = 0
    for p in pieces:
        target = tensors[p.source]
        if p.positions is None:
            part = value
        else:
            part = value.narrow(p.dim, begin, len(p.positions))
            begin += len(p.positions)
        # where hidden dimensions are pruned: the kept slice (a copy), written back below
        block = target if p.hidden is None else target.index_select(p.hidden_dim, p.hidden.to(target.device))
        if p.positions is None:
            block.copy_(part)
        else:
            block.index_copy_(p.dim, p.positions.to(target.device), part)
        if p.hidden is not None:
            target.index_copy_(p.hidden_dim, p.hidden.to(target.device), block)


def model_shape_of(model) -> ModelShape:
    """The ``ModelShape`` of a compact model, read from its config."""
    config = model.config
    from grain_bench.shape import LayerShape

    layers = tuple(LayerShape(tuple((int(q), int(v)) for q, v in layer["heads"]), int(layer["ffn_dim"]))
                   for layer in config.layer_shapes)
    return ModelShape(config.hidden_size, layers, config.vocab_size, config.max_position_embeddings,
                      config.type_vocab_size, config.original_head_dim)


def save_pruned(model, path: str, tokenizer=None, metadata: dict[str, Any] | None = None) -> str:
    """Write a compact model as a self-contained directory (atomically: a temp dir renamed into place); its
    ``grain_bench.json`` records the SHA-256 of the weights and the config, which ``load_pruned`` checks."""
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
        model.config.pruned_format_version = modeling.format_of(model.config)
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(modeling.__file__, os.path.join(tmp, MODELING_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        meta = {**(metadata or {}), "format": METADATA_FORMAT, "format_version": model.config.pruned_format_version,
                "shape": model_shape_of(model).to_dict(),
                HASHES_KEY: {name: sha256_of_file(os.path.join(tmp, name)) for name in _hashed_files(tmp)}}
        with open(os.path.join(tmp, METADATA_FILE), "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True, default=str)
        ordinary_permissions(tmp)
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _move_into_place(tmp: str, path: str) -> None:
    """Rename ``tmp`` to ``path``, replacing an older copy without ever leaving a half-written directory there."""
    if os.path.exists(path):
        parent = os.path.dirname(path)
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
        os.rename(path, os.path.join(old, "model"))
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def _hashed_files(folder: str) -> list[str]:
    """The files of a saved folder whose content hash is recorded: the config and every weights file (and index)."""
    names = sorted(os.listdir(folder))
    return ["config.json", *(n for n in names if n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))]


def load_pruned(path: str, device: str | torch.device | None = None, runtime: str = "eager",
                example_inputs: dict[str, torch.Tensor] | None = None):
    """Load a directory written by ``save_pruned`` (or by a grain-bench run) as its compact model, in eval mode.

    Before anything is served it is checked: the SHA-256 of the config and weights files against those
    ``grain_bench.json`` recorded at save time, every tensor's name and shape against the widths the config declares
    (no layer, head or neuron more or less), and finite weights; a damaged or edited folder raises ``UsageError``
    naming the file. Folders saved before the hashes were recorded (grain-bench 0.1.x before issue 28) are not
    verified against a hash; their shapes and weights are still checked.

    ``runtime`` (a registered ``grain_bench.runtimes.Runtime`` of the device): ``eager`` returns the module;
    ``compile``, ``aoti``, ``ragged``, ``onnx`` (CPU) or ``cuda_graph`` (CUDA) return it prepared for inference on
    ``example_inputs`` (default: a batch of 2 x 16 tokens), checked to reproduce the module's outputs."""
    from grain_bench.runtimes import get_runtime

    chosen = get_runtime(runtime, str(device or "cpu"))
    chosen.check()
    path = str(path)
    cls = _checked_class(path, _read_config(path))
    _verify_hashes(path, _read_metadata(path))
    model = _load_checked(cls, path)
    if device is not None:
        model.to(device)
    model.eval()
    from grain_bench.runtimes import example_inputs as default_inputs

    inputs = example_inputs or default_inputs(model.config, next(model.parameters()).device)
    return chosen.prepare(model, inputs) if runtime != "eager" else model


def _read_json(file: str, what: str) -> dict[str, Any]:
    """A saved folder's JSON object ``file``; ``UsageError`` naming it when it cannot be read or is not an object."""
    try:
        with open(file, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot read {what} {file}: {reason}; save the model again (or re-run its run)") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} {file} is not a JSON object; save the model again (or re-run its run)")
    return value


def _read_config(path: str) -> dict[str, Any]:
    config_path = os.path.join(path, "config.json")
    if not os.path.lexists(config_path):
        raise UsageError(f"{path!r} is not a saved compact model: no config.json there (expected {config_path}); "
                         f"pass the folder a grain-bench run or save_pruned wrote")
    return _read_json(config_path, "the config")


def _check_version(version: Any, file: str) -> None:
    if not isinstance(version, int) or isinstance(version, bool) or version not in READABLE_FORMATS:
        readable = ", ".join(str(v) for v in READABLE_FORMATS[:-1]) + f" and {READABLE_FORMATS[-1]}"
        raise UsageError(f"{file} holds a compact model in format version {version!r}; this grain-bench "
                         f"{__version__} reads formats {readable}: load it with the grain-bench that wrote it (its "
                         f"{MODELING_FILE} is in the folder: AutoModel.from_pretrained(path, trust_remote_code=True) "
                         f"uses that one)")


def _checked_class(path: str, config: dict[str, Any]):
    """The compact class a saved config names, after its model type and format version are checked."""
    modeling = _modeling()
    config_path = os.path.join(path, "config.json")
    if config.get("model_type") != modeling.PrunedBertConfig.model_type:
        raise UsageError(f"{path!r} holds a {config.get('model_type')!r} model, not a grain-bench compact model "
                         f"(model_type {modeling.PrunedBertConfig.model_type!r})")
    _check_version(config.get("pruned_format_version", 1), f"{path!r}")
    names = config.get("architectures") or ["PrunedBertModel"]
    cls = getattr(modeling, str(names[0]), None) if isinstance(names, list) and names else None
    if not isinstance(cls, type) or not issubclass(cls, modeling.PrunedBertPreTrainedModel):
        raise UsageError(f"unknown compact architecture {names!r} in {config_path}")
    return cls


def _read_metadata(path: str) -> dict[str, Any]:
    """``grain_bench.json`` of a saved folder, its format checked (every ``save_pruned`` wrote one)."""
    file = os.path.join(path, METADATA_FILE)
    if not os.path.lexists(file):
        raise UsageError(f"{file} is missing: {path!r} was not written by save_pruned, or it is damaged; save the "
                         f"model again (or re-run its run)")
    meta = _read_json(file, "the metadata")
    if meta.get("format", METADATA_FORMAT) != METADATA_FORMAT:
        raise UsageError(f"{file} is not grain-bench compact-model metadata (format {meta.get('format')!r}, expected "
                         f"{METADATA_FORMAT!r}); save the model again")
    _check_version(meta.get("format_version", 1), file)
    return meta


def _verify_hashes(path: str, meta: dict[str, Any]) -> None:
    """Every file ``meta`` hashed still has that SHA-256 (nothing to check for folders saved before hashes)."""
    hashes = meta.get(HASHES_KEY)
    if hashes is None:
        return
    if not isinstance(hashes, dict) or not hashes:
        raise UsageError(f"{os.path.join(path, METADATA_FILE)} holds no valid {HASHES_KEY!r} table; save the model "
                         f"again")
    for name, expected in sorted(hashes.items()):
        file = os.path.join(path, name)
        try:
            actual = sha256_of_file(file)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}; the saved model is incomplete: save it "
                             f"again (or re-run its run)") from None
        if actual != expected:
            raise UsageError(f"{file} does not match the SHA-256 recorded when the model was saved (damaged, edited "
                             f"or from another model); save the model again (or re-run its run)")


def _load_checked(cls, path: str):
    """The model of a saved folder, after its tensors' names and shapes are checked against its config; its weights
    are then checked to be finite."""
    weights = os.path.join(path, "model.safetensors")
    try:
        config = cls.config_class.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{os.path.join(path, 'config.json')} is not a valid compact-model config ({exc}); save the "
                         f"model again") from None
    if not os.path.isfile(weights):
        raise UsageError(f"{weights} is missing or not a file; the saved model is incomplete: save it again (or "
                         f"re-run its run)")
    _check_shapes(cls, config, weights)
    from safetensors import SafetensorError

    try:
        model = cls.from_pretrained(path, config=config)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        raise UsageError(f"cannot load the weights {weights}: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                         f"save the model again") from None
    bad = [name for name, tensor in model.state_dict().items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise UsageError(f"{weights} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), first "
                         f"{bad[0]}; the model cannot be served: re-run its run")
    return model


def _check_shapes(cls, config, weights: str) -> None:
    """Every tensor the config's widths need is in ``weights`` with that shape, and nothing else is there."""
    from safetensors import SafetensorError, safe_open

    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in cls(config).state_dict().items()}
    try:
        with safe_open(weights, "pt") as handle:
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as exc:
        raise UsageError(f"cannot read the weights {weights}: {exc}; save the model again (or re-run its run)") \
            from None
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(expected) & set(found) if expected[name] != found[name])
    if missing or extra or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                 else f"{wrong[0]} is {found[wrong[0]]}, the config says {expected[wrong[0]]}")
        raise UsageError(f"{weights} does not fit the widths in config.json ({len(missing)} tensor(s) missing, "
                         f"{len(extra)} unexpected, {len(wrong)} of another shape; {first}): the config or the weights "
                         f"were edited or mixed up; save the model again")
