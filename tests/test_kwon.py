"""Kwon et al.'s retraining-free pruning and the calibration-only run mode: no optimizer step, the teacher untouched,
masks within the cost, the reference's search and rearrangement rules, mask tuning that helps, retraining after it."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import run_cli, tweets_distillation_setup

from grain_bench.arch import encoder_layers
from grain_bench.calibrate import LayerCapture, calibrate, calibration_batches, calibration_sample
from grain_bench.costs import CostModel, flops_cost, parameter_cost
from grain_bench.errors import GrainBenchError
from grain_bench.masked import MaskedModel
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors
from grain_bench.methods.kwon import Kwon, damped_solve, greedy_rearrange, search
from grain_bench.recipes import get_recipe
from grain_bench.types import RECIPE_ADDED_LATER, Recipe

RECIPE = get_recipe("test", {"calibration_examples": 48, "calibration_batch_size": 8})


@pytest.fixture(scope="module")
def setup():
    """The tiny tweets set-up (task, teacher, data) shared by the calibration tests."""
    task, teacher, data, _ = tweets_distillation_setup()
    return task, teacher, data


def _calibrated(setup, density, cost=None, **options):
    task, teacher, data = setup
    method = Kwon.from_options(options)
    return method, calibrate(method, task, teacher, data, RECIPE, density, seed=0, progress=False, cost_model=cost)


def _state(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_calibration_takes_no_optimizer_step_and_leaves_the_teacher_untouched(setup):
    task, teacher, data = setup
    before = _state(teacher)
    _, untuned = _calibrated(setup, 0.5, tune=False)
    assert all(torch.equal(before[name], value) for name, value in teacher.state_dict().items())
    # without tuning the student is the teacher's weights exactly (its masks apart): nothing trained them
    assert all(torch.equal(before[name], value) for name, value in untuned.model.state_dict().items())
    assert untuned.steps == 0 and set(untuned.phases) == {"calibration"}
    assert untuned.examples == {"calibration": 48}
    assert untuned.model is not teacher
    _, tuned = _calibrated(setup, 0.5)
    changed = {name for name, value in tuned.model.state_dict().items() if not torch.equal(before[name], value)}
    # tuning only rescales what its scales fold into: the attention output and FFN output projections' weights
    assert changed and all(name.endswith(("attention.output.dense.weight", "output.dense.weight"))
                           for name in changed)
    assert all(torch.equal(before[name], value) for name, value in teacher.state_dict().items())


def test_calibration_sample_is_seeded_distinct_and_bounded():
    assert calibration_sample(100, 10, 3) == calibration_sample(100, 10, 3)
    assert calibration_sample(100, 10, 3) != calibration_sample(100, 10, 4)
    assert len(set(calibration_sample(100, 100, 1))) == 100
    assert sorted(calibration_sample(5, 2048, 0)) == list(range(5))


@pytest.mark.parametrize("ratio", [0.7, 0.5, 0.4, 0.3, 0.2])
def test_masks_meet_the_flops_constraint_and_fill_it(setup, ratio):
    space = MaskSpace.from_config(setup[1].config)
    cost = flops_cost(space, 32)
    _, result = _calibrated(setup, ratio, cost)
    fraction = cost.fraction(result.masks, space)
    assert fraction <= ratio + 1e-12
    one_neuron = cost.coefficients["ffn_units"] / cost.dense_cost(space)
    assert ratio - fraction < one_neuron or bool(result.masks.ffn.all())
    # whole heads: a head keeps all of its query and value units or none
    assert torch.equal(result.masks.qk, result.masks.vo)
    assert bool((result.masks.vo.all(-1) | ~result.masks.vo.any(-1)).all())


def _reference_search(head_importance, ffn_importance, space, seq_len, constraint):
    """The reference's ``search_mac`` (prune/search.py) in its own arithmetic: MACs per head and per neuron, the
    neurons that fit as ``int(room / per-neuron MACs)``, the largest total importance."""
    d, t, dh = space.hidden, seq_len, space.head_dim
    per_head = 3 * t * d * dh + 2 * t * t * dh + t * dh * d
    per_neuron = 2 * t * d
    original = space.num_layers * (space.num_heads * per_head + space.ffn_dim * per_neuron)
    heads_sorted, heads_order = head_importance.view(-1).sort(descending=True)
    ffn_sorted, ffn_order = ffn_importance.view(-1).sort(descending=True)
    best, choice = 0, None
    for num_heads in range(1, space.num_layers * space.num_heads + 1):
        num_neurons = max(int((constraint * original - per_head * num_heads) / per_neuron), 0)
        total = heads_sorted[:num_heads].sum() + ffn_sorted[:num_neurons].sum()
        if total > best:
            best, choice = total, (heads_order[:num_heads], ffn_order[:num_neurons])
    heads, neurons = torch.zeros(space.num_layers * space.num_heads), torch.zeros(space.num_layers * space.ffn_dim)
    heads[choice[0]], neurons[choice[1]] = 1, 1
    return heads.view(space.num_layers, -1).bool(), neurons.view(space.num_layers, -1).bool()


@pytest.mark.parametrize("seed", range(5))
def test_search_under_the_references_mac_cost_is_the_references_search(seed):
    space = MaskSpace(4, 6, 8, 96, 48)
    t = 40
    generator = torch.Generator().manual_seed(seed)
    head_importance = torch.rand(4, 6, generator=generator, dtype=torch.float64) * 3
    ffn_importance = torch.rand(4, 96, generator=generator, dtype=torch.float64) ** 4
    mac = CostModel("mac", "MACs", {"qk_units": 2.0 * t * space.hidden + t * t,
                                    "vo_units": 2.0 * t * space.hidden + t * t, "ffn_units": 2.0 * t * space.hidden},
                    {"num_layers": 4, "num_heads": 6, "head_dim": 8, "ffn_dim": 96, "hidden": 48})
    for constraint in (0.6, 0.4, 0.25, 0.1):
        ours = search(head_importance, ffn_importance, space, mac, constraint)
        reference = _reference_search(head_importance, ffn_importance, space, t, constraint)
        assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])


def test_search_pays_fixed_block_costs():
    space = MaskSpace(3, 4, 8, 32, 32)
    cost = CostModel("latency", "ms", {"constant": 1.0, "attention_blocks": 2.0, "heads": 0.5, "ffn_blocks": 1.5,
                                       "qk_units": 0.01, "vo_units": 0.01, "ffn_units": 0.02},
                     {"num_layers": 3, "num_heads": 4, "head_dim": 8, "ffn_dim": 32, "hidden": 32})
    generator = torch.Generator().manual_seed(0)
    heads, neurons = torch.rand(3, 4, generator=generator), torch.rand(3, 32, generator=generator)
    from grain_bench.methods.kwon import whole_head_masks
    for budget in (0.8, 0.5, 0.3):
        masks = whole_head_masks(*search(heads, neurons, space, cost, budget), space)
        assert cost.fraction(masks, space) <= budget + 1e-12


def _pruned_gradient_norm(mask, grads):
    return float(grads[:, ~mask].sum(1).pow(2).sum())


@pytest.mark.parametrize("seed", range(4))
def test_rearrangement_keeps_the_count_and_never_raises_the_pruned_gradient_norm(seed):
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(16, 24, generator=generator, dtype=torch.float64)  # batches x units, correlated below
    grads[:, 12:] += grads[:, :12]
    fisher = grads.pow(2).sum(0)
    start = torch.ones(24, dtype=torch.bool)
    start[fisher.argsort()[:10]] = False  # the search's choice: the lowest-Fisher units pruned
    result = greedy_rearrange(start, grads)
    assert int(result.sum()) == int(start.sum())
    assert _pruned_gradient_norm(result, grads) <= _pruned_gradient_norm(start, grads) + 1e-12


def test_damped_solve_is_what_lsmr_with_damping_converges_to():
    from scipy.sparse.linalg import lsmr

    generator = torch.Generator().manual_seed(1)
    for size in (2, 5, 13):
        columns = torch.randn(200, size, generator=generator, dtype=torch.float64)
        ata = columns.t() @ columns
        atb = columns.t() @ torch.randn(200, generator=generator, dtype=torch.float64)
        ours, ok = damped_solve(ata, atb)
        rhs = (atb - ata.sum(1)).numpy()
        theirs = lsmr(ata.numpy(), rhs, damp=1, atol=1e-12, btol=1e-12, maxiter=1000)[0] + 1
        assert ok and torch.allclose(ours, torch.from_numpy(theirs), rtol=1e-7, atol=1e-9)
    single, ok = damped_solve(torch.tensor([[4.0]]), torch.tensor([2.0]))
    assert ok and torch.allclose(single, torch.tensor([0.5], dtype=torch.float64))  # (2 - 4) / 4 + 1


def _calibration_loss(setup, model) -> float:
    task, _, data = setup
    batches = calibration_batches(data, RECIPE, 0, "cpu")
    with torch.no_grad():
        total = sum(task.hard_loss(model(**task.model_inputs(b)), b).item() * len(b["labels"]) for b in batches)
    return total / sum(len(b["labels"]) for b in batches)


@pytest.mark.parametrize("density", [0.7, 0.5, 0.3, 0.15])
def test_mask_tuning_never_raises_the_calibration_loss(setup, density):
    _, untuned = _calibrated(setup, density, tune=False)
    method, tuned = _calibrated(setup, density)
    assert torch.equal(untuned.masks.flat(), tuned.masks.flat())
    report = method.info["tuning"]
    assert report["ffn_layers"]  # something was fitted
    # both students still have their masks' gates installed: the losses are those of the pruned models
    assert _calibration_loss(setup, tuned.model) <= _calibration_loss(setup, untuned.model) + 1e-6
    assert report["kept"] == (report["loss_tuned"] <= report["loss_untuned"])


def test_a_layer_run_alone_on_its_cached_input_captures_what_the_full_forward_does(setup):
    """The tuning's layer-by-layer passes (each layer on the previous pass's output) see exactly what full forward
    passes through every layer see, under pruned gates with real values; the encoder's layers are put back."""
    task, teacher, data = setup
    model = copy.deepcopy(teacher).eval()
    space = MaskSpace.from_config(model.config)
    masked = MaskedModel(model, space)
    generator = torch.Generator().manual_seed(0)
    masks = UnitMasks.from_tensors(UnitTensors.filled(space, 0.0).map(lambda t: torch.rand(t.shape, generator=generator)
                                                                      < 0.6)).coupled()
    masked.apply(masks)
    masked.set_values(masks.map(lambda t: 0.5 + torch.rand(t.shape, generator=generator)))
    layers = list(encoder_layers(model))
    for batch in calibration_batches(data, RECIPE, 0, "cpu")[:2]:
        inputs, keep = task.model_inputs(batch), batch["attention_mask"].bool()
        hidden = None
        for layer in range(space.num_layers):
            capture = LayerCapture(model, layer)
            alone = capture.capture(inputs, keep, hidden=hidden)
            full = capture.capture(inputs, keep)
            for stage in ("attention", "ffn"):
                for name, value in vars(getattr(full, stage)).items():
                    assert torch.allclose(getattr(getattr(alone, stage), name), value, atol=1e-6), (layer, name)
            assert torch.allclose(alone.output, full.output, atol=1e-6)
            stopped = capture.capture(inputs, keep, ("ffn",), hidden=hidden)  # the pass stopped after the FFN input
            assert torch.equal(stopped.ffn.activations, alone.ffn.activations)
            assert list(encoder_layers(model)) == layers
            hidden = alone.output
    with pytest.raises(GrainBenchError, match="stages"):
        LayerCapture(model, 0).capture(inputs, keep, ("logits",))


def test_the_tuning_check_is_what_keeps_the_loss_from_rising():
    """On this weak teacher the reference's unchecked fit raises the loss at some densities (its target is the model
    under the square-root budget's masks, not the task): the check refuses those scales and keeps the others."""
    setup = tweets_distillation_setup()[:3]
    kept = {}
    for density in (0.7, 0.5, 0.3, 0.15):
        _, untuned = _calibrated(setup, density, tune=False)
        _, unchecked = _calibrated(setup, density, check_tuning=False)
        method, _ = _calibrated(setup, density)
        raised = _calibration_loss(setup, unchecked.model) > _calibration_loss(setup, untuned.model) + 1e-6
        kept[density] = method.info["tuning"]["kept"]
        assert kept[density] == (not raised)
    assert any(kept.values()) and not all(kept.values())


def test_rearrangement_and_tuning_can_be_turned_off(setup):
    plain, result = _calibrated(setup, 0.4, rearrange=False, tune=False)
    space = MaskSpace.from_config(setup[1].config)
    heads = torch.stack(plain.head_grads).pow(2).sum(0)
    ffn = torch.stack(plain.ffn_grads).pow(2).sum(0)
    searched = search(heads, ffn, space, parameter_cost(space), 0.4)
    assert torch.equal(result.masks.vo.any(-1), searched[0]) and torch.equal(result.masks.ffn, searched[1])


def test_recipe_fields_added_later_stay_out_of_run_ids_at_their_defaults():
    recipe = Recipe()
    for name, default in RECIPE_ADDED_LATER.items():
        assert getattr(recipe, name) == default
        assert name not in recipe.to_dict()
    assert Recipe.parse(recipe.to_dict()) == recipe
    changed = Recipe.parse({"calibration_examples": 512})
    assert changed.to_dict()["calibration_examples"] == 512
    assert Recipe.parse(changed.to_dict()) == changed


@pytest.mark.usefixtures("builtin_plugins_only")
def test_kwon_runs_to_a_flops_ratio_then_retrains(tmp_path, capsys, data_dir):
    from grain_bench.leaderboard.store import RecordStore

    results = str(tmp_path / "results")
    code, out, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "kwon", "--target-speedup", "2",
                             "--cost-model", "flops", "-o", "kwon.retrain_steps=3", results=results, capsys=capsys)
    assert code == 0, err
    (record,) = RecordStore(results).records()
    assert record.ok and record.speed is not None
    assert record.speed.cost_model.startswith("flops:") and record.speed.predicted >= 2.0 - 1e-9
    assert record.method_info["steps"] == 3
    assert record.spec.target() == "0.5 FLOPs"


@pytest.mark.usefixtures("builtin_plugins_only")
def test_retraining_starts_from_the_calibrated_student_and_keeps_its_masks(setup):
    task, teacher, data = setup
    method, calibrated = _calibrated(setup, 0.4, retrain_steps=0)
    retrained_method = Kwon.from_options({"retrain_steps": 4})
    retrained = calibrate(retrained_method, task, teacher, data, RECIPE, 0.4, seed=0, progress=False)
    assert torch.equal(retrained.masks.flat(), calibrated.masks.flat())
    assert retrained.steps == 4 and set(retrained.phases) == {"calibration", "distillation"}
    assert retrained.examples["distillation"] == 4 * RECIPE.batch_size
    assert any(not torch.equal(a, b) for a, b in zip(calibrated.model.state_dict().values(),
                                                       retrained.model.state_dict().values()))
