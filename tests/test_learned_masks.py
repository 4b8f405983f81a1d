"""The learned-mask method API and its two rivals of GRAIN: CoFi's hard-concrete gates and Lagrangian, structured
movement's signed scores, folding scales into weights, and GRAIN's per-step behaviour through the extended trainer."""

from __future__ import annotations

import math

import pytest
import torch

from grain_bench.backbones import load_tiny
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors
from grain_bench.method import TrainState
from grain_bench.methods.cofi import Cofi, deterministic_gates, prob_nonzero, sample_gates
from grain_bench.methods.movement import Movement

BETA = 2 / 3
MINILM = MaskSpace(num_layers=6, num_heads=12, head_dim=32, ffn_dim=1536, hidden=384)


def p_nonzero_by_hand(log_alpha: float, beta: float = BETA) -> float:
    """1 − Q(0) of the stretched hard concrete on (−0.1, 1.1): Q(0) = σ(β·logit(0.1/1.2) − log α)."""
    logit = math.log((0.1 / 1.2) / (1 - 0.1 / 1.2))
    return 1 - 1 / (1 + math.exp(-(logit * beta - log_alpha)))


def test_hard_concrete_sampling_matches_its_probability_of_being_nonzero():
    generator = torch.Generator().manual_seed(0)
    for log_alpha in (-2.0, 0.0, 2.0):
        z = sample_gates(torch.full((200_000,), log_alpha), BETA, generator)
        assert z.min() >= 0 and z.max() <= 1
        assert float((z > 0).float().mean()) == pytest.approx(p_nonzero_by_hand(log_alpha), abs=0.005)
        assert float(prob_nonzero(torch.tensor(log_alpha), BETA)) == pytest.approx(p_nonzero_by_hand(log_alpha))
    assert p_nonzero_by_hand(0.0) == pytest.approx(0.8318, abs=1e-4)  # by hand: 1 − σ(−1.5986)


def test_deterministic_gates_zero_the_expected_number_of_lowest_gates():
    log_alpha = torch.tensor([[-3.0, -1.0, 1.0, 3.0], [4.0, 4.0, 4.0, -4.0]])
    gates = deterministic_gates(log_alpha, BETA)
    for row in range(2):
        expected_zeros = round(4 - sum(p_nonzero_by_hand(float(a)) for a in log_alpha[row]))
        soft = [1 / (1 + math.exp(-float(a) / BETA * 0.8)) for a in log_alpha[row]]
        order = sorted(range(4), key=lambda i: soft[i])
        for i in range(4):
            want = 0.0 if i in order[:expected_zeros] else soft[i]
            assert float(gates[row, i]) == pytest.approx(want), (row, i)
    # by hand: P(z > 0) = 0.198, 0.645, 0.931, 0.990 (sum 2.764: 1 zero) and 0.996 x3, 0.003 (1 zero)
    assert [round(4 - sum(p_nonzero_by_hand(float(a)) for a in r)) for r in log_alpha] == [1, 1]
    assert float(deterministic_gates(torch.tensor(-4.0), BETA)) == 0.0  # a layer gate: one expected zero


def reference_deterministic_z(size: int, log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """CoFiPruning's ``L0Module._deterministic_z`` for one layer of one gate type, in our words: the expected number of
    zeros, ``size - sum(P(z > 0))`` rounded, of the lowest soft gates σ(log α / β · 0.8) become 0; a scalar gate with
    a zero expected becomes 0."""
    log_alpha = log_alpha.detach()
    soft = torch.sigmoid(log_alpha / beta * 0.8)
    zeros = round(size - float(prob_nonzero(log_alpha, beta).sum()))
    if zeros > 0:
        if soft.dim() == 0:
            return torch.tensor(0.0)
        soft = soft.clone()
        soft[torch.topk(soft, k=zeros, largest=False).indices] = 0.0
    return soft


def reference_inference_gates(log_alpha: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference's ``forward(training=False)``: every type layer by layer, ``size`` its per-layer count (1 for the
    attention-layer and FFN-layer gates, ``head_layer`` and ``mlp``), but ``hidden``, which is not per layer: one
    group of ``hidden_size`` gates."""
    return {name: reference_deterministic_z(tensor.shape[0], tensor) if name == "hidden"
            else torch.stack([reference_deterministic_z(1 if tensor.dim() == 1 else tensor.shape[1], layer)
                              for layer in tensor])
            for name, tensor in log_alpha.items()}


def log_alpha_for(p_nonzero: float, beta: float = BETA) -> float:
    """The log α whose gate is non-zero with probability ``p_nonzero``."""
    logit = math.log((0.1 / 1.2) / (1 - 0.1 / 1.2))
    return logit * beta - math.log((1 - p_nonzero) / p_nonzero)


def test_deterministic_gates_are_the_references_on_many_log_alpha_sets():
    """Per layer over heads and neurons, and each layer gate on its own: 300 log-alpha sets, spread and shifted so that
    layer gates fall on both sides of P = 1/2, give the reference's gates exactly. Grouping the L layer gates into one
    group of L (the bug) closed round(L − ΣP) layers: with every P = 0.65 on 6 layers, 2 of them."""
    method, _ = _cofi(MINILM)
    generator = torch.Generator().manual_seed(7)
    for trial in range(300):
        with torch.no_grad():
            for log_alpha in method.log_alpha.values():
                shift, spread = float(torch.randn(1, generator=generator)) * 2, 0.1 + trial % 5
                log_alpha.copy_(shift + spread * torch.randn(log_alpha.shape, generator=generator))
        mine, theirs = method.deterministic(), reference_inference_gates(method.log_alpha)
        for name in theirs:  # the same zeros; the same soft values up to float rounding (one vectorised sigmoid)
            assert torch.equal(mine[name] == 0, theirs[name] == 0), (trial, name)
            assert torch.allclose(mine[name], theirs[name].float(), atol=0, rtol=1e-6), (trial, name)
    with torch.no_grad():
        for name in ("att", "ffn"):
            method.log_alpha[name].fill_(log_alpha_for(0.65))
    assert float(prob_nonzero(method.log_alpha["att"].detach(), BETA)[0]) == pytest.approx(0.65)
    gates = method.deterministic()
    assert bool((gates["att"] > 0).all()) and bool((gates["ffn"] > 0).all())  # the reference keeps every layer
    with torch.no_grad():
        method.log_alpha["att"][2] = log_alpha_for(0.45)
    assert [bool(g > 0) for g in method.deterministic()["att"]] == [True, True, False, True, True, True]


@pytest.mark.parametrize("options", [{}, {"prepruning_steps": 5}])
def test_cofi_trains_dense_before_the_pruning_window_as_the_reference_does(options):
    """Before the schedule's first pruning step (the reference's prepruning_finetune_steps) no gate is sampled and no
    Lagrangian is added: through the real trainer, the gates and multipliers have not moved when the window opens, no
    step before it adds a Lagrangian, and every step from it on does (until the freeze)."""
    from grain_bench.distill import distill, set_seed
    from grain_bench.harness import TaskData
    from grain_bench.recipes import get_recipe
    from grain_bench.tasks.tweets import TweetSentiment

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    train = task.encode("train", tokenizer, 32, limit=48)
    data = TaskData(task, tokenizer, train, train, train, task.collate(tokenizer))
    seen = {}

    class Watched(Cofi):
        def gates(self, state):
            seen["window"] = state.prune_start_step
            if state.step == self.start_step(state):  # what the gates are when the L0 module starts
                seen["start"] = ({n: a.detach().clone() for n, a in self.log_alpha.items()},
                                 self.lambdas.detach().clone())
            values = super().gates(state)
            seen.setdefault("sampled", []).append((state.step, values is not None))
            return values

        def loss(self, state):
            value = super().loss(state)
            seen.setdefault("lagrangian", []).append((state.step, value is not None))
            return value

        def setup(self, state):
            super().setup(state)
            seen["initial"] = {n: a.detach().clone() for n, a in self.log_alpha.items()}

    set_seed(1)
    student, _ = load_tiny("sequence", 2)
    recipe = get_recipe("test", {"max_steps": 20})
    result = distill(Watched.from_options(options, seed=1), task, teacher.eval(), student, data, recipe, 0.5, seed=1,
                     progress=False)
    start = min(step for step, sampled in seen["sampled"] if sampled)
    assert start == (options["prepruning_steps"] + 1 if options else seen["window"])
    assert start > 1 and all(sampled == (step >= start) for step, sampled in seen["sampled"] if step < start + 3)
    gates, lambdas = seen["start"]
    assert all(torch.equal(gates[n], seen["initial"][n]) for n in gates) and bool((lambdas == 0).all())
    assert [step for step, added in seen["lagrangian"] if added] == list(range(start, start + len(
        [1 for _, added in seen["lagrangian"] if added])))  # from the window's first step on, every step
    assert not any(added for step, added in seen["lagrangian"] if step < start) and result.steps == 20


def test_the_expected_density_at_the_freeze_is_the_gates_when_the_masks_are_fixed(tmp_path, monkeypatch, regs):
    """Through the harness: the record's ``density.expected_at_freeze`` is the gates' expected density when
    ``masks_for`` fixes the structure (not a later or earlier step's), and ``gap_at_freeze`` its distance to the
    target; the same recipe's GRAIN record has neither."""
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.plugins import make_plugin_manager
    from grain_bench.recipes import get_recipe

    seen = {}
    original = Cofi.masks_for

    def watched(self, state, density):  # a spy: it records, then runs CoFi's own masks_for
        seen["at_freeze"] = float(self.gate_density(state.space).detach())
        return original(self, state, density)

    monkeypatch.setattr(Cofi, "masks_for", watched)
    specs = build_specs(regs, ["cofi", "grain"], ["tweets"], [0.3], [1], "test-bert-tiny", get_recipe("test"))
    harness = Harness(str(tmp_path / "results"), regs=regs, pm=make_plugin_manager(load_entry_points=False),
                      progress=False, save_models=False, measure_latency=False)
    records = {spec.method: harness.run(spec) for spec in specs}
    cofi, grain = records["cofi"], records["grain"]
    assert cofi.ok and grain.ok, (cofi.error, grain.error)
    assert cofi.density.expected_at_freeze == pytest.approx(seen["at_freeze"], abs=1e-12)
    assert cofi.density.gap_at_freeze == pytest.approx(seen["at_freeze"] - 0.3, abs=1e-12)
    assert grain.density.expected_at_freeze is None and grain.density.gap_at_freeze is None
    curve = cofi.method_info["constraint_curve"]  # [step, expected, target, lambda_1], ending at the freeze
    assert [row[0] % 10 for row in curve[:-1]] == [0] * (len(curve) - 1) and curve[-1][1] == pytest.approx(
        cofi.method_info["expected_density"], abs=1e-6) and all(0 < row[1] <= 1 and row[2] >= 0.3 for row in curve)


def _cofi(space: MaskSpace, target: float = 0.3, seed: int = 0, **options) -> tuple[Cofi, TrainState]:
    model, _ = load_tiny("sequence", 2)
    method = Cofi.from_options(options, seed=seed)
    state = TrainState(step=1, total_steps=100, model=model, space=space, masks=UnitMasks.full(space),
                       target_density=target, prune_start_step=20, prune_end_step=40)
    method.setup(state)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # spread the gates out, so the expectation is not trivially 1
        for log_alpha in method.log_alpha.values():
            log_alpha.copy_(torch.randn(log_alpha.shape, generator=generator) * 2)
    return method, state


@pytest.mark.parametrize("hidden", [True, False])
def test_closed_form_expected_density_agrees_with_monte_carlo(hidden):
    """With hidden dimensions a unit costs 2d'+c at the sampled kept width d'; the closed form takes it at the
    expected width, which is the expectation for gates drawn independently (the cost is linear in each)."""
    method, _ = _cofi(MINILM, hidden=hidden)
    assert ("hidden" in method.log_alpha) is hidden
    generator = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(4000):
        z = {name: sample_gates(a.detach(), BETA, generator) for name, a in method.log_alpha.items()}
        costs = MINILM.unit_costs_at(int((z["hidden"] > 0).sum())) if hidden else MINILM.unit_costs
        heads = ((z["att"][:, None] * z["head"]) > 0).sum() * MINILM.head_dim * (costs["qk"] + costs["vo"])
        neurons = ((z["ffn"][:, None] * z["int"]) > 0).sum() * costs["ffn"]
        samples.append(float(heads + neurons) / MINILM.total_cost())
    expected = float(method.gate_density(MINILM).detach())
    assert 0.2 < expected < 0.9
    assert sum(samples) / len(samples) == pytest.approx(expected, abs=0.005)


def test_lagrangian_pushes_the_density_down_when_it_is_above_the_target():
    method, state = _cofi(MINILM, target=0.1)
    state.step = state.prune_start_step + 1000  # past the warm-up: t is the run's target
    optimizers = [torch.optim.AdamW(g.params, lr=g.lr, weight_decay=g.weight_decay, maximize=g.maximize)
                  for g in method.parameters(state)]
    before = float(method.gate_density(MINILM).detach())
    assert before > 0.1
    for _ in range(2):  # step 1: λ rises by ascent (the gap is positive); step 2: the gates descend on λ·gap
        for optimizer in optimizers:
            optimizer.zero_grad()
        method.loss(state).backward()
        for optimizer in optimizers:
            optimizer.step()
    assert float(method.lambdas[0].detach()) > 0
    assert float(method.gate_density(MINILM).detach()) < before


def test_target_warms_up_linearly_from_dense():
    method, state = _cofi(MINILM, target=0.2)
    for step, want in ((1, 1.0), (20, 1.0), (25, 1.0 - 0.8 * 5 / 10), (30, 0.2), (90, 0.2)):
        state.step = step
        assert method.target_at(state) == pytest.approx(want)


def test_the_schedule_options_have_the_references_meaning():
    """``prepruning_steps`` = P dense steps, so the L0 module (and the target's warm-up) starts at step P + 1;
    ``warmup_steps`` = W: the target reaches the run's at step P + 1 + W; the defaults name the same run as no
    option; a fraction and a step count together, or no step left to learn before the freeze, are refused."""
    from grain_bench.errors import UsageError

    model, _ = load_tiny("sequence", 2)
    method = Cofi.from_options({"prepruning_steps": 9, "warmup_steps": 4}, seed=0)
    state = TrainState(step=1, total_steps=100, model=model, space=MINILM, masks=UnitMasks.full(MINILM),
                       target_density=0.2, prune_start_step=20, prune_end_step=40)
    method.setup(state)
    for step, want, active in ((9, 1.0, False), (10, 1.0, True), (12, 1.0 - 0.8 * 2 / 4, True), (14, 0.2, True),
                               (50, 0.2, True)):
        state.step = step
        assert method.active(state) is active and method.target_at(state) == pytest.approx(want), step
    # hidden is on by default but was not an option before: a stored set without it means off (the runs stored
    # then did not prune hidden dimensions), so the default is stored and hidden=false keeps the old run ids
    assert Cofi.canonical_options({"prepruning_steps": -1, "warmup_steps": 0, "warmup": 0.1}) == {"hidden": True}
    assert Cofi.canonical_options({"hidden": "false"}) == {}
    assert Cofi.from_spec({}).options.hidden is False and Cofi.from_spec({"hidden": True}).options.hidden is True
    assert Cofi.from_options({}).options.hidden is True
    with pytest.raises(UsageError, match="not both"):
        Cofi.from_options({"warmup": 0.2, "warmup_steps": 5})
    late = Cofi.from_options({"prepruning_steps": 40}, seed=0)
    with pytest.raises(UsageError, match="leaves the gates no step to learn"):
        late.setup(state)


def test_final_masks_reach_the_target_within_one_unit():
    one_unit = max(MINILM.unit_costs.values()) / MINILM.total_cost()
    for target in (0.05, 0.2, 0.5):
        method, state = _cofi(MINILM, target=target, seed=int(target * 100))
        masks = method.masks_for(state, target)
        assert abs(masks.density(MINILM) - target) <= one_unit
        assert torch.equal(masks.qk.any(-1), masks.vo.any(-1))  # a head keeps both kinds or neither
        scales = method.unit_scales(state)
        assert bool((scales.vo[masks.vo] > 0).all()) and bool((scales.ffn[masks.ffn] > 0).all())
    # every neuron a CoFi zero at 5%: whole heads cannot land within one unit, so the weakest kept head is trimmed
    method, state = _cofi(MINILM, target=0.05)
    with torch.no_grad():
        method.log_alpha["int"].fill_(-4.0)
    masks = method.masks_for(state, 0.05)
    assert abs(masks.density(MINILM) - 0.05) <= one_unit and int(masks.ffn.sum()) == 0


def _set_gates(method: Cofi, head: float, neuron: float) -> None:
    """Every head gate logit ``head`` and every neuron's ``neuron``; layer gates wide open."""
    with torch.no_grad():
        for name in ("att", "ffn"):
            method.log_alpha[name].fill_(10.0)
        method.log_alpha["head"].fill_(head)
        method.log_alpha["int"].fill_(neuron)


def test_the_landing_ranks_heads_and_neurons_on_one_scale_and_reports_what_it_brought_back():
    """Whichever kind has the lower gate values is pruned first: untrained gates (heads 10, neurons 0) lose every
    neuron before a head; neurons wide open and heads lower lose every head first. Overshooting gates (nearly every
    unit a CoFi zero) are brought back to the target, and ``landing`` counts them with their lowest scale (their soft
    gate value, near 0) and the share of the cost spent on them, which ``quality.converged`` refuses over 0.01."""
    from grain_bench.quality import converged

    method, state = _cofi(MINILM, target=0.5, hidden=False)
    _set_gates(method, head=10.0, neuron=0.0)  # as initialised: no gate has learned
    masks = method.masks_for(state, 0.5)
    assert masks.heads_kept() == MINILM.num_layers * MINILM.num_heads and int(masks.ffn.sum()) < masks.ffn.numel()
    landing = method.info["landing"]
    assert landing["brought_back"] == {"heads": 0, "neurons": 0} and landing["lowest_scale"] is None
    pruned = masks.ffn.numel() - int(masks.ffn.sum())  # CoFi's zeros (none brought back) and what the landing removed
    assert landing["removed"]["neurons"] + method.info["cofi_zeros"]["neurons"] == pruned
    assert landing["removed"]["heads"] == 0 < landing["removed"]["neurons"]
    _set_gates(method, head=2.0, neuron=10.0)  # heads at 0.917, neurons at 1.0: no zeros, heads ranked lower
    masks = method.masks_for(state, 0.5)
    assert masks.heads_kept() <= 1 and int(masks.ffn.sum()) < masks.ffn.numel()  # one head may be trimmed unit-wise
    _set_gates(method, head=-10.0, neuron=-10.0)  # clamped to log 0.01: nearly everything a CoFi zero
    masks = method.masks_for(state, 0.5)
    landing = method.info["landing"]
    def soft(log_alpha: float) -> float:  # a clamped gate's soft value
        return float(torch.sigmoid(torch.tensor(log_alpha) / method.options.temperature * 0.8))

    assert landing["brought_back"]["neurons"] > 0  # the unit's gate at log 0.01 times its layer's at log 100
    assert landing["lowest_scale"] == pytest.approx(soft(math.log(1e-2)) * soft(math.log(1e2)), rel=1e-5)
    costs = MINILM.unit_costs  # every brought-back unit is near zero here: its whole cost is wasted
    wasted = (landing["brought_back"]["heads"] * MINILM.head_dim * (costs["qk"] + costs["vo"])
              + landing["brought_back"]["neurons"] * costs["ffn"]) / MINILM.total_cost()
    assert landing["near_zero_share"] == pytest.approx(wasted) and wasted > 0.4  # ~0.45 of the cost, at 0.004
    assert converged(0.5, 0.5, landing["near_zero_share"]) is False and converged(0.5, 0.5, 0.005) is True
    assert converged(0.505, 0.5) is True and converged(0.52, 0.5) is False and converged(None, 0.5) is None


def test_folded_scales_keep_the_outputs_through_compaction(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masked import MaskedModel, fold_unit_scales

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    generator = torch.Generator().manual_seed(3)
    masks = UnitMasks.from_tensors(UnitTensors(*(torch.rand(s, generator=generator) > 0.3
                                                 for s in space.shapes().values()))).coupled()
    scales = UnitTensors(*(0.2 + torch.rand(s, generator=generator) for s in space.shapes().values()))
    inputs = tokenizer(["a short sentence", "and another, longer one"], return_tensors="pt", padding=True)
    masked = MaskedModel(model, space)
    masked.apply(masks)
    masked.set_values(scales)
    with torch.no_grad():
        gated = model(**inputs).logits
    masked.set_values(None)
    fold_unit_scales(model, space, masks, scales)
    with torch.no_grad():
        folded = model(**inputs).logits
        small = compact(model, masks, space).eval()(**inputs).logits
    assert torch.allclose(gated, folded, atol=1e-5)
    assert torch.allclose(folded, small, atol=1e-4)


def test_movement_accumulates_the_signed_negative_gradient():
    space = MaskSpace(num_layers=1, num_heads=2, head_dim=2, ffn_dim=3, hidden=4)
    method = Movement.from_options({}, seed=0)
    state = TrainState(step=1, total_steps=10, model=None, space=space, masks=UnitMasks.full(space))
    g1 = UnitTensors(torch.tensor([[[1.0, -2.0], [0.5, 0.0]]]), torch.tensor([[[-1.0, 3.0], [2.0, 2.0]]]),
                     torch.tensor([[0.1, -0.2, 0.3]]))
    g2 = g1.map(lambda t: 2 * t)
    nan = g1.map(lambda t: t * float("nan"))
    for grads in (g1, nan, g2):
        state.unit_grads = grads
        method.observe(state)
    scores = method.unit_scores(state)
    for (_, got), (_, one) in zip(scores.items(), g1.items()):
        assert torch.equal(got, -3 * one.double())  # −(g1 + 2·g1); the NaN step adds nothing
    assert method.skipped == 1 and method.gradient_source == "logit"


def test_movement_adam_scores_are_what_torch_adam_makes_of_the_gradients():
    """``scores=adam``: each unit's score is the parameter ``torch.optim.Adam`` (lr 1e-2, no decay) trains from 0 on
    the unit's dL/dgate, so it rises where the loss falls as the gate grows; a NaN step takes no Adam step."""
    space = MaskSpace(num_layers=1, num_heads=2, head_dim=2, ffn_dim=3, hidden=4)
    method = Movement.from_options({"scores": "adam"}, seed=0)
    state = TrainState(step=1, total_steps=10, model=None, space=space, masks=UnitMasks.full(space))
    generator = torch.Generator().manual_seed(3)
    steps = [UnitTensors.filled(space, 0.0).map(lambda t, k=k: torch.randn(t.shape, generator=generator) * 10.0 ** k)
             for k in (-3, 0, 2, -1)]
    steps.insert(2, steps[0].map(lambda t: t * float("nan")))
    reference = torch.zeros_like(UnitTensors.filled(space, 0.0).flat(), dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([reference], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for grads in steps:
        state.unit_grads = grads
        method.observe(state)
        if bool(torch.isfinite(grads.flat()).all()):
            reference.grad = grads.flat().double()
            adam.step()
    assert torch.allclose(method.unit_scores(state).flat(), reference.detach(), atol=1e-12, rtol=1e-9)
    assert method.skipped == 1 and method.updates == 4


def test_movement_per_matrix_ranking_keeps_the_same_share_of_every_matrix():
    """``ranking=per_matrix`` (the references' default): with one layer's scores 1000 times the other's, the global
    ranking empties the weak layer, while per-matrix percentiles keep about the same share of each layer's query
    units, value units and FFN neurons, through the one allocator."""
    from grain_bench.allocate import allocate

    space = MaskSpace(num_layers=2, num_heads=4, head_dim=8, ffn_dim=64, hidden=32)
    generator = torch.Generator().manual_seed(0)
    raw = UnitTensors.filled(space, 0.0).map(lambda t: torch.rand(t.shape, generator=generator, dtype=torch.float64))
    raw = raw.map(lambda t: t * torch.tensor([1000.0, 1.0], dtype=torch.float64).reshape(-1, *[1] * (t.dim() - 1)))
    shares = {}
    for ranking in ("global", "per_matrix"):
        method = Movement.from_options({"ranking": ranking}, seed=0)
        method.scores = raw
        state = TrainState(step=1, total_steps=10, model=None, space=space, masks=UnitMasks.full(space))
        masks = allocate(method.unit_scores(state), state.masks, space, 0.5)
        shares[ranking] = {kind: mask.reshape(2, -1).double().mean(1).tolist() for kind, mask in masks.items()}
    assert shares["global"]["ffn"][1] == 0.0 and shares["global"]["ffn"][0] == 1.0  # the weak layer is emptied
    for kind in ("qk", "vo", "ffn"):
        assert all(abs(share - 0.5) <= 0.05 for share in shares["per_matrix"][kind]), shares["per_matrix"]


def test_grain_per_step_scores_ema_and_masks_through_the_trainer():
    """GRAIN's behaviour pinned on a fixed tiny case: at every step the EMA equals the one recomputed from the
    observed gradients (|grad|, value scores × tanh(kept share / α) with the previous masks, β = 0.998, from 0), and
    each pruning step's masks equal ``prune_to_density`` of that EMA at the scheduled density."""
    from grain_bench.allocate import prune_to_density
    from grain_bench.distill import distill, set_seed
    from grain_bench.harness import TaskData
    from grain_bench.methods.grain import Grain, structure_factor
    from grain_bench.recipes import get_recipe
    from grain_bench.tasks.tweets import TweetSentiment

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    train = task.encode("train", tokenizer, 32, limit=48)
    data = TaskData(task, tokenizer, train, train, train, task.collate(tokenizer))
    seen = []

    class Recording(Grain):
        def observe(self, state):
            previous = None if self.ema.value is None else self.ema.value.clone()
            super().observe(state)
            seen.append(("observe", state.step, state.unit_grads.clone(), state.masks.clone(), previous,
                         self.ema.value.clone()))

        def masks_for(self, state, density):
            result = super().masks_for(state, density)
            seen.append(("masks", state.step, density, self.ema.value.clone(), state.masks.clone(), result.clone()))
            return result

    method = Recording.from_options({}, seed=1)
    set_seed(1)
    student, _ = load_tiny("sequence", 2)
    recipe = get_recipe("test", {"max_steps": 15})
    result = distill(method, task, teacher.eval(), student, data, recipe, 0.4, seed=1, progress=False)
    space = result.space
    ema = None
    cuts = 0
    for event in seen:
        if event[0] == "observe":
            _, step, grads, masks, previous, after = event
            scores = grads.map(lambda t: t.double().abs())
            scores.vo = scores.vo * structure_factor(masks.vo, 0.3)
            ema = scores.map(lambda t: (1 - 0.998) * t) if ema is None else UnitTensors(
                *(0.998 * e + (1 - 0.998) * s for (_, e), (_, s) in zip(ema.items(), scores.items())))
            for (_, mine), (_, theirs) in zip(ema.items(), after.items()):
                assert torch.allclose(mine, theirs, rtol=1e-12, atol=0), step
        else:
            _, step, density, current, before, got = event
            want = prune_to_density(current, before, space, density)
            assert all(torch.equal(a, b) for (_, a), (_, b) in zip(want.items(), got.items())), step
            cuts += 1
    # observed every step up to the last pruning step, whose masks use that step's scores; not after (they feed nothing)
    last_cut = max(e[1] for e in seen if e[0] == "masks")
    assert cuts >= 3 and [e[1] for e in seen if e[0] == "observe"] == list(range(1, last_cut + 1))
    assert last_cut < 15
    assert abs(result.masks.density(space) - 0.4) < 0.1


def test_cofi_hidden_gates_learn_and_land_on_the_target():
    """``hidden`` (the default): one hard-concrete gate per hidden dimension, sampled with the others and applied by
    the masked model, so the loss through the model and the Lagrangian both reach its log-alpha. At the freeze the
    deterministic hidden gates close round(d − ΣP) dimensions (one group), the landing puts the density on the target
    within one unit at the kept width, and the kept dimensions keep their soft values as scales."""
    from grain_bench.masked import MaskedModel

    model, _ = load_tiny("sequence", 2)
    space = MaskSpace.from_config(model.config)
    method, state = _cofi(space, target=0.4)
    state.model = model
    state.step = state.prune_start_step + 30  # past the warm-up: the target is the run's
    masked = MaskedModel(model, space)
    values = method.gates(state)
    assert values.hidden is not None and values.hidden.shape == (space.hidden,)
    masked.set_values(values)
    ids = torch.randint(5, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    (model(input_ids=ids).logits.pow(2).sum() + method.loss(state)).backward()
    assert float(method.log_alpha["hidden"].grad.abs().sum()) > 0
    masked.set_values(None)
    masked.remove()
    masks = method.masks_for(state, 0.4)
    closed = round(space.hidden - float(prob_nonzero(method.log_alpha["hidden"].detach(), BETA).sum()))
    landed = method.info["landing"]
    assert int((~masks.hidden).sum()) == closed - landed["brought_back"]["hidden"] and closed > 0
    one_unit = max(space.unit_costs.values()) / space.total_cost()
    assert abs(masks.density(space) - 0.4) <= one_unit
    soft = torch.sigmoid(method.log_alpha["hidden"].detach() / BETA * 0.8)
    assert torch.allclose(method.unit_scales(state).hidden[masks.hidden], soft[masks.hidden])


def test_cofi_reopens_hidden_dimensions_when_they_alone_undershoot_the_target():
    """Hidden gates closed nearly everywhere (log 0.01) while every other gate is open: the hidden dimensions alone
    would leave far less than the target, so closed ones are reopened (largest soft value first) until the units at
    that width reach it, and the heads and neurons land the rest within one unit."""
    method, state = _cofi(MINILM, target=0.3)
    _set_gates(method, head=10.0, neuron=10.0)
    with torch.no_grad():
        method.log_alpha["hidden"].fill_(math.log(1e-2))
        method.log_alpha["hidden"][:5] = math.log(1e-2) + torch.arange(5, dtype=torch.float32) * 0.1
    masks = method.masks_for(state, 0.3)
    landed = method.info["landing"]
    opened = MINILM.hidden - method.info["cofi_zeros"]["hidden"]  # the expected count of open gates, round(ΣP)
    back = landed["brought_back"]["hidden"]
    assert back > 0 and masks.hidden_kept(MINILM) == opened + back
    assert bool(masks.hidden[:5].all())  # the five with the largest soft values stay open or come back first
    one_unit = max(MINILM.unit_costs.values()) / MINILM.total_cost()
    assert abs(masks.density(MINILM) - 0.3) <= one_unit
    assert landed["near_zero_share"] > 0.01  # they come back at scale ~0.004: the row is flagged
