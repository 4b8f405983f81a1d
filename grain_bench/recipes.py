"""Named distillation recipes: ``paper`` (the GRAIN paper's), ``quick`` (the CPU benchmark), ``demo`` (the default
job), ``test`` (the tiny test model)."""

from __future__ import annotations

from grain_bench.errors import UnknownRecipeError
from grain_bench.types import Recipe

RECIPES: dict[str, dict] = {
    # The GRAIN paper / reference code (arXiv 2212.07634, §4.1, and the run scripts of airaria/GRAIN).
    "paper": dict(temperature=8.0, hidden_loss=True, hidden_layer_step=2, lr=3e-5, adam_eps=1e-6, weight_decay=0.01,
                  warmup=0.1, clip=1.0, batch_size=32, epochs=20.0, max_length=128, prune_start=0.2, prune_end=0.4,
                  teacher_lr=2e-5, teacher_epochs=3.0, teacher_batch_size=32),
    # The CPU comparison benchmark (benchmarks/run_comparison.sh): about 3 minutes a run on 2 cores; short runs, so a
    # higher student lr than the paper's; 1,000 test examples scored.
    "quick": dict(temperature=8.0, hidden_loss=True, hidden_layer_step=2, lr=1e-4, adam_eps=1e-6, weight_decay=0.01,
                  warmup=0.1, clip=1.0, batch_size=16, max_steps=120, max_length=64, prune_start=0.2, prune_end=0.4,
                  teacher_lr=5e-5, teacher_max_steps=200, teacher_batch_size=16, max_eval_examples=1000,
                  eval_batch_size=64),
    # The default job (`grain-bench run` with no --recipe): five methods on tweets in under 15 minutes on 2 CPU cores.
    "demo": dict(temperature=8.0, hidden_loss=True, hidden_layer_step=2, lr=1e-4, adam_eps=1e-6, weight_decay=0.01,
                 warmup=0.1, clip=1.0, batch_size=16, max_steps=80, max_length=64, prune_start=0.2, prune_end=0.4,
                 teacher_lr=5e-5, teacher_max_steps=160, teacher_batch_size=16, max_eval_examples=1000,
                 eval_batch_size=64),
    # Seconds: for tests and smoke checks on the tiny backbone.
    "test": dict(temperature=2.0, hidden_loss=True, hidden_layer_step=1, lr=1e-3, batch_size=8, max_steps=12,
                 max_length=32, prune_start=0.2, prune_end=0.6, teacher_lr=3e-3, teacher_max_steps=60,
                 teacher_batch_size=8, max_train_examples=64, max_eval_examples=32, eval_batch_size=16),
}


#: Per-task values of a named recipe, applied under the user's overrides. The reference code trains CoNLL-2003 at lr
#: 1e-4 for 40 epochs and SQuAD at max length 384 (airaria/GRAIN run scripts). ``quick``'s values come from the
#: learning curves in benchmarks/results/task-curves (teacher and dense/grain/heads students at 0.2 against steps,
#: MiniLM-L6; docs/tasks.md): the fewest steps after which the teacher's curve flattens and the students have recovered.
#: CoNLL-2003's students take the curves' full 600 steps: a 400-step run (pruning squeezed into 80 steps) left grain
#: and heads at 65% and 55% of the teacher's entity F1 on the CPU (benchmarks/results/tasks-minilm.md).
#: RTE's teacher never clears its majority class by more than noise in this range; SQuAD clears it only at length 256
#: with 800 teacher steps, which is past the CPU budget (docs/tasks.md gives the estimates). ``demo`` has none.
TASK_VALUES: dict[str, dict[str, dict]] = {
    "paper": {"conll2003": dict(lr=1e-4, epochs=40.0), "squad": dict(max_length=384)},
    "quick": {"stsb": dict(teacher_max_steps=600, max_steps=400),
              "mrpc": dict(max_length=128, teacher_max_steps=400, max_steps=400),
              "rte": dict(max_length=128, teacher_max_steps=400, max_steps=400),
              "conll2003": dict(max_length=128, teacher_lr=1e-4, teacher_max_steps=600, max_steps=600,
                                max_eval_examples=4000),
              "squad": dict(max_length=256, teacher_max_steps=800, max_steps=400)},
}


def get_recipe(name: str, overrides: dict | None = None, task: str | None = None) -> Recipe:
    """The named recipe, with its values for ``task`` (``TASK_VALUES``) and then ``overrides`` (key -> value, strings
    converted) applied; the user's overrides always win."""
    if name not in RECIPES:
        raise UnknownRecipeError(name, RECIPES)
    values = {**RECIPES[name], **TASK_VALUES.get(name, {}).get(task or "", {}), **(overrides or {})}
    return Recipe.parse({**values, "name": name if not overrides else f"{name}+custom"})
