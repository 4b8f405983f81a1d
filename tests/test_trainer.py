"""The shared distillation trainer: gradient separation, call order, schedule, compact training."""

from __future__ import annotations

import pytest
import torch

from grain_bench.backbones import load_tiny
from grain_bench.distill import distill, layer_pairs, set_seed
from grain_bench.masks import UnitMasks
from grain_bench.method import Method
from grain_bench.recipes import get_recipe


class Recorder(Method):
    """Records what the trainer shows it: call order, observed gradients, weights at each callback."""

    name = "recorder"

    def __init__(self, source="logit"):
        super().__init__()
        self.gradient_source = source
        self.calls = []
        self.grads = []

    def observe(self, state):
        weight = state.model.bert.encoder.layer[0].output.dense.weight.detach().clone()
        self.calls.append(("observe", state.step, state.loss_name, weight))
        self.grads.append(state.unit_grads)

    def masks_for(self, state, density):
        weight = state.model.bert.encoder.layer[0].output.dense.weight.detach().clone()
        self.calls.append(("masks_for", state.step, density, weight))
        masks = UnitMasks(state.masks.qk.clone(), state.masks.vo.clone(), state.masks.ffn.clone())
        masks.ffn[0, : int((1 - density) * masks.ffn.shape[1])] = False
        return masks


@pytest.fixture(scope="module")
def setup():
    from grain_bench.harness import TaskData
    from grain_bench.tasks.tweets import TweetSentiment

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    with torch.no_grad():  # a teacher that differs from the student's initialisation, so every loss has gradients
        generator = torch.Generator().manual_seed(7)
        for param in teacher.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    collate = task.collate(tokenizer)
    train = task.encode("train", tokenizer, 32, limit=48)
    return task, teacher.eval(), TaskData(task, tokenizer, train, train, train, collate)


def _run(setup, method, compact_phase=True, **recipe):
    task, teacher, data = setup
    set_seed(0)
    student, _ = load_tiny("sequence", 2)
    recipe = get_recipe("test", {"max_steps": 10, "prune_start": 0.2, "prune_end": 0.5, **recipe})
    return distill(method, task, teacher, student, data, recipe, 0.5, seed=0, progress=False,
                   compact_phase=compact_phase)


def test_observed_gradients_come_from_the_logit_loss_only(setup):
    separated, summed, logit_only = Recorder("logit"), Recorder("total"), Recorder("logit")
    _run(setup, separated, hidden_loss="true", hidden_weight="100")
    _run(setup, summed, hidden_loss="true", hidden_weight="100")
    _run(setup, logit_only, hidden_loss="false")
    # step 1: same weights, same batch; only the losses behind the gradients differ
    for a, b in zip(separated.grads[0].items(), logit_only.grads[0].items()):
        torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(summed.grads[0].ffn, logit_only.grads[0].ffn)
    assert {c[2] for c in separated.calls if c[0] == "observe"} == {"logit"}
    assert {c[2] for c in summed.calls if c[0] == "observe"} == {"total"}


def test_call_order_observe_then_masks_before_the_optimizer_step(setup):
    method = Recorder()
    result = _run(setup, method)
    steps = [(kind, step) for kind, step, *_ in method.calls]
    assert steps[0] == ("observe", 1)
    pruning = [step for kind, step in steps if kind == "masks_for"]
    assert pruning == list(range(2, 6))  # start = int(0.2 * 10), end = int(0.5 * 10)
    for index, (kind, step, _, weight) in enumerate(method.calls):
        if kind == "masks_for":
            observe = method.calls[index - 1]
            assert observe[0] == "observe" and observe[1] == step
            torch.testing.assert_close(weight, observe[3])  # no optimizer step in between
    densities = [c[2] for c in method.calls if c[0] == "masks_for"]
    assert densities[-1] == 0.5 and all(a >= b for a, b in zip(densities, densities[1:]))
    assert result.masks.ffn[0].sum() == result.masks.ffn.shape[1] // 2


def test_observations_stop_after_the_last_pruning_step_when_the_method_says_so(setup):
    """``observes_after_pruning = False``: observe up to the schedule's last pruning step only, then one backward of
    the summed loss, which trains the same weights (up to float rounding) as the two separated backward passes."""

    class ScoresFeedMasksOnly(Recorder):
        observes_after_pruning = False

    every, until_end = Recorder(), ScoresFeedMasksOnly()
    kept = _run(setup, every, hidden_loss="true")
    cut = _run(setup, until_end, hidden_loss="true", compact_phase=False)  # compared in every place
    assert [c[1] for c in every.calls if c[0] == "observe"] == list(range(1, 11))
    assert [c[1] for c in until_end.calls if c[0] == "observe"] == list(range(1, 6))  # last pruning step: 5
    assert [c[:3] for c in every.calls if c[0] == "masks_for"] == [c[:3] for c in until_end.calls
                                                                   if c[0] == "masks_for"]
    for (name, a), (_, b) in zip(kept.model.named_parameters(), cut.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_methods_see_each_steps_batch_and_attention_mask_through_the_model_swap(setup):
    """An activation-based method needs the step's inputs: ``state.batch`` (and ``state.attention_mask``) at every
    observation. After the last pruning step such a method (``observes_after_pruning = False``) is trained in compact
    form: ``state.model`` is then another module, and forward hooks on the old one would go quiet."""

    class Inputs(Recorder):
        observes_after_pruning = False

        def observe(self, state):
            batch = state.batch
            self.calls.append((state.step, id(state.model), tuple(batch["input_ids"].shape),
                               state.attention_mask is batch["attention_mask"], "labels" in batch,
                               int(batch["attention_mask"].sum())))

    method = Inputs()
    result = _run(setup, method)
    observed = [c for c in method.calls if isinstance(c[0], int)]
    assert [c[0] for c in observed] == list(range(1, 6))  # up to the last pruning step
    assert all(shape[0] == 8 and shape[1] <= 32 for _, _, shape, *_ in observed)  # the recipe's batch, length
    assert all(same and not labels for *_, same, labels, _ in observed)
    assert all(0 < tokens <= shape[0] * shape[1] for _, _, shape, _, _, tokens in observed)
    assert len({model for _, model, *_ in observed}) == 1 and result.phases.get("distillation", 0) > 0


def test_trainer_rejects_masks_that_grow_back(setup):
    class Regrow(Recorder):
        def masks_for(self, state, density):
            masks = UnitMasks.full(state.space)
            if state.step > 2:
                return masks
            masks.ffn[0, 0] = False
            return masks

    from grain_bench.errors import GrainBenchError

    with pytest.raises(GrainBenchError, match="re-grew"):
        _run(setup, Regrow())


def test_layer_map_includes_embeddings_and_last_layer():
    assert layer_pairs(12, 2) == [(i, i) for i in range(0, 13, 2)]
    assert layer_pairs(6, 4) == [(0, 0), (4, 4), (6, 6)]


def test_a_method_that_observes_nothing_gets_the_same_training_from_one_backward(setup):
    """The trainer backpropagates the summed loss once for a method without ``observe``; the student trains as with
    the two backward passes an observing method needs (the same gradients, to rounding)."""
    from grain_bench.methods.baselines import Dense

    class Watching(Dense):  # overrides observe, so the trainer keeps the two backward passes
        def observe(self, state):
            pass

    once, twice = _run(setup, Dense()), _run(setup, Watching())
    for (name, a), (_, b) in zip(once.model.named_parameters(), twice.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert once.history[-1]["logit_loss"] == pytest.approx(twice.history[-1]["logit_loss"], rel=1e-4)


class FixedCut(Method):
    """Cuts one fixed structure at every pruning step: a head removed, a head without query units (uniform
    attention), thinned heads, a layer without attention and thinned FFNs."""

    name = "fixed-cut"

    def masks_for(self, state, density):
        masks = UnitMasks.full(state.space)
        masks.qk[0, 0], masks.vo[0, 0] = False, False
        masks.qk[0, 1] = False
        masks.vo[0, 1, ::2] = False
        masks.qk[0, 2, 3:] = False
        masks.vo[1] = False
        masks.ffn[:, ::3] = False
        return masks


def _dropout_student():
    """The tiny student with dropout on (attention and hidden), so training draws random numbers every step."""
    from transformers import BertConfig, BertForSequenceClassification

    tiny, _ = load_tiny("sequence", 2)
    config = BertConfig(**{**tiny.config.to_dict(), "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1})
    model = BertForSequenceClassification(config)
    model.load_state_dict(tiny.state_dict())
    return model


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_compact_training_after_the_last_pruning_step_is_the_masked_training(setup, attention):
    """From the last pruning step on, the trainer trains the compact student (``CompactPhase``) and writes it back:
    the same weights as training the masked student to the end, dropout's random numbers included."""
    task, teacher, data = setup
    recipe = get_recipe("test", {"max_steps": 10, "prune_start": 0.2, "prune_end": 0.5, "hidden_loss": "true"})

    def run(compact_phase, reseed_at=None):
        set_seed(0)
        student = _dropout_student()
        student.config._attn_implementation = attention
        trained = []

        def on_step(step, state):
            trained.append(type(state.model).__name__)
            if step == reseed_at:
                torch.manual_seed(123)  # other dropout draws from here on

        result = distill(FixedCut(), task, teacher, student, data, recipe, 0.5, seed=0, progress=False,
                         on_step=on_step, compact_phase=compact_phase)
        return result, trained

    masked, masked_models = run(False)
    compacted, compact_models = run(True)
    assert set(masked_models) == {"BertForSequenceClassification"}
    assert compact_models == ["BertForSequenceClassification"] * 4 + ["PrunedBertForSequenceClassification"] * 6
    assert type(compacted.model).__name__ == "BertForSequenceClassification"
    assert [h["logit_loss"] for h in compacted.history] == pytest.approx([h["logit_loss"] for h in masked.history],
                                                                          rel=1e-5)
    kept = compacted.masks
    assert torch.equal(kept.ffn, masked.masks.ffn) and torch.equal(kept.vo, masked.masks.vo)
    from grain_bench.compaction import compact

    inputs = task.model_inputs(data.collate([data.train.features[i] for i in range(8)]))
    with torch.no_grad():
        expected = compact(masked.model, kept).eval()(**inputs).logits
        got = compact(compacted.model, kept).eval()(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for (name, a), (_, b) in zip(masked.model.named_parameters(), compacted.model.named_parameters()):
        if "encoder" not in name:  # the encoder's pruned places keep their values from the switch on; compared above
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    # the comparison sees dropout: other random numbers in the compact phase train other weights
    other, _ = run(True, reseed_at=5)
    with torch.no_grad():
        assert not torch.allclose(compact(other.model, kept).eval()(**inputs).logits, got, rtol=1e-4, atol=1e-5)


def test_the_compact_phase_mirrors_dropout_on_its_own_blocks_only():
    """``CompactPhase`` makes its compact model's attention blocks draw the masked model's dropout (``mirror_dropout``:
    those blocks only, not the class nor another compact model) and ``finish()`` makes them plain again."""
    from grain_bench.compact_training import CompactPhase, MirroredDropoutAttention, mirror_dropout
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace
    from grain_bench.modeling_pruned_bert import PrunedBertAttention

    student = _dropout_student()
    space = MaskSpace.from_config(student.config)
    masks = UnitMasks.full(space)
    masks.qk[0, 0], masks.vo[0, 0], masks.vo[1] = False, False, False
    masks.ffn[:, ::3] = False
    other = compact(student, masks)
    phase = CompactPhase(student, masks, space, torch.optim.AdamW(student.parameters()))
    blocks = [layer.attention for layer in phase.model.base_model.encoder.layer]
    assert [type(block) for block in blocks] == [MirroredDropoutAttention] * 2
    assert [block.mirror for block in blocks] == [(4, [1, 2, 3]), (4, [])]
    assert all(type(layer.attention) is PrunedBertAttention for layer in other.base_model.encoder.layer)
    with pytest.raises(ValueError, match="3 kept heads need as many indices below 4, got \\[0, 4\\]"):
        mirror_dropout(blocks[0], 4, [0, 4])
    phase.finish()
    assert all(type(block) is PrunedBertAttention and not hasattr(block, "mirror") for block in blocks)
