"""Task heads (``grain_bench.heads``): each head kind names classes that exist and fit together, from loading a
backbone to the compact model and its saved folder's auto classes; a task's head is its one source of truth."""

from __future__ import annotations

import pytest

from grain_bench.heads import HEADS, task_head


@pytest.mark.parametrize("name", list(HEADS))
def test_each_head_names_classes_that_exist_and_fit_together(name):
    import transformers

    from grain_bench import modeling_pruned_bert
    from grain_bench.backbones import auto_class, load_tiny
    from grain_bench.compaction import AUTO_MAP, compact
    from grain_bench.masks import MaskSpace, UnitMasks

    head = HEADS[name]
    assert head.name == name and auto_class(name) is getattr(transformers, head.auto_class)
    model, _ = load_tiny(name, 3)
    assert type(model).__name__ == head.source_class
    small = compact(model, UnitMasks.full(MaskSpace.from_config(model.config)))
    assert type(small) is getattr(modeling_pruned_bert, head.compact_class)
    assert AUTO_MAP[head.auto_class] == f"modeling_pruned_bert.{head.compact_class}"  # what trust_remote_code loads
    outputs = [n for n in ("logits", "start_logits", "end_logits") if getattr(small(input_ids=_ids()), n, None)
               is not None]
    assert outputs == (["start_logits", "end_logits"] if name == "span" else ["logits"])


def _ids():
    import torch

    return torch.tensor([[2, 10, 11, 12, 3]])


def test_every_registered_task_has_a_known_head_and_an_unknown_one_is_refused(regs):
    from grain_bench.errors import UsageError

    for entry in regs.tasks.entries.values():
        assert entry.obj.task_head() is HEADS[entry.obj.head]
    with pytest.raises(UsageError, match="unknown task head 'ranking'; expected one of sequence, regression"):
        task_head("ranking")


def test_sequence_heads_give_the_trivial_predictor_and_label_checks():
    import numpy as np

    labels = np.array([1, 0, 1, 1])
    chance = HEADS["sequence"].chance_predictions(labels, 3)
    assert chance.shape == (4, 3) and (chance.argmax(-1) == 1).all()  # the most frequent class
    regression = HEADS["regression"].chance_predictions(np.array([1.0, 2.0, 3.0]), 1)
    assert regression.shape == (3, 1) and (regression == 2.0).all()  # the mean label
    bad, expected = HEADS["sequence"].check_label(np.array([0.0, 2.0, 1.5, -1.0, np.nan]), 2)
    assert list(bad) == [1, 2, 3, 4] and expected == "a class id in 0..1"
    bad, expected = HEADS["regression"].check_label(np.array([0.5, np.inf]), 1)
    assert list(bad) == [1] and expected == "a finite number"
    assert HEADS["token"].chance_predictions(labels, 3) is None and not HEADS["span"].sequence_labels
