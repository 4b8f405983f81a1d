"""Named distillation recipes: ``paper`` (the GRAIN paper's), ``quick`` (the CPU benchmark), ``demo`` (the default
job), ``test`` (the tiny test model). A task may declare its own values of a named recipe (``Task.recipe_values``:
SQuAD's length, CoNLL-2003's learning rate), applied under the user's overrides."""

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


def get_recipe(name: str, overrides: dict | None = None, task=None) -> Recipe:
    """The named recipe, with the values ``task`` (a ``Task`` class) declares for it (``Task.recipe_values``) and then
    ``overrides`` (key -> value, strings converted) applied; the user's overrides always win."""
    if name not in RECIPES:
        raise UnknownRecipeError(name, RECIPES)
    declared = getattr(task, "recipe_values", {}).get(name, {}) if task is not None else {}
    values = {**RECIPES[name], **declared, **(overrides or {})}
    return Recipe.parse({**values, "name": name if not overrides else f"{name}+custom"})
