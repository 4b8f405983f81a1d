"""The grid of a sweep: methods x tasks x densities x seeds expanded into validated, content-hashed run specs."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.types import Recipe, RunSpec


def build_specs(regs, methods: list[str], tasks: list[str], densities: list[float], seeds: list[int], backbone: str,
                recipe: Recipe | Callable[[str], Recipe], method_options: dict[str, dict[str, Any]] | None = None,
                data_dir: str | None = None, data_revisions: dict[str, str] | None = None) -> list[RunSpec]:
    """The grid methods x tasks x densities x seeds as run specs (methods that do not prune get density 1 once).

    ``recipe`` is one recipe for every task, or a function of the task name (``lambda task: get_recipe(name,
    overrides, regs.tasks.get(task))`` applies the values a task declares for a named recipe). Each task's data is
    identified here (``RunSpec.data``: a content hash of the files it reads from ``data_dir`` or its package, or the
    hub commit that ``data_revisions`` ({task or "*": branch, tag or commit}, default each task's ``hub_ref``) names
    now). Every name and option is validated here, before anything runs or is written.
    """
    _check_grid(methods, tasks, densities, seeds)
    methods = regs.resolve_methods(methods)
    tasks = regs.expand_tasks(tasks)
    options = _method_options(regs, methods, dict(method_options or {}))
    specs = []
    for task_name in tasks:
        task_cls = regs.tasks.get(task_name)
        revisions = data_revisions or {}
        revision = revisions.get(task_name, revisions.get("*"))  # for hub data: a branch, tag or commit
        data = task_cls(data_dir, revision).data_identity().key  # content hash or hub commit; DataError if unreadable
        task_recipe = (recipe(task_name) if callable(recipe) else recipe).to_dict()
        for name in methods:
            method_densities = densities if getattr(regs.methods.get(name), "prunes", True) else [1.0]
            specs += [RunSpec(method=name, task=task_name, backbone=backbone, target_density=float(density),
                              seed=int(seed), recipe=task_recipe, method_options=options[name],
                              task_version=task_cls.version, data=data,
                              data_dir=os.path.abspath(data_dir) if data_dir else None)
                      for density in method_densities for seed in seeds]
    return list({spec.run_id: spec for spec in specs}.values())


def _check_grid(methods: list[str], tasks: list[str], densities: list[float], seeds: list[int]) -> None:
    """Every axis of the grid non-empty, seeds that numpy takes, densities in (0, 1]."""
    for what, items in (("methods", methods), ("tasks", tasks), ("densities", densities), ("seeds", seeds)):
        if not items:
            raise UsageError(f"no {what} given: the grid needs at least one")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
            raise UsageError(f"seed {seed!r} is not an integer in [0, 2^32), the range numpy's random seed takes")
    for density in densities:
        if not 0 < density <= 1:  # also refuses NaN
            raise UsageError(f"density {density:g} is outside (0, 1]; give fractions such as 0.05,0.1")


def _method_options(regs, methods: list[str], given: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each method's options in their one stored form (validated, defaults left out, so equal runs share one id);
    options given under an alias count for the method, options of a method not in the grid are refused."""
    for key in given:
        if regs.methods.entry(key).name not in methods:
            raise UsageError(f"options given for method {key!r}, which is not in --methods ({', '.join(methods)})")
    options: dict[str, dict[str, Any]] = {}
    for name in methods:
        values: dict[str, Any] = {}
        for key, more in given.items():
            if regs.methods.entry(key).name == name:
                values.update(more)
        options[name] = regs.methods.get(name).canonical_options(values)
    return options
