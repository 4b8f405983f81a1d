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
    for what, items in (("methods", methods), ("tasks", tasks), ("densities", densities), ("seeds", seeds)):
        if not items:
            raise UsageError(f"no {what} given: the grid needs at least one")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
            raise UsageError(f"seed {seed!r} is not an integer in [0, 2^32), the range numpy's random seed takes")
    method_options = dict(method_options or {})
    methods = regs.resolve_methods(methods)
    tasks = regs.expand_tasks(tasks)
    for key in method_options:
        if regs.methods.entry(key).name not in methods:
            raise UsageError(f"options given for method {key!r}, which is not in --methods ({', '.join(methods)})")
    for density in densities:
        if not 0 < density <= 1:  # also refuses NaN
            raise UsageError(f"density {density:g} is outside (0, 1]; give fractions such as 0.05,0.1")
    options: dict[str, dict[str, Any]] = {}
    for name in methods:
        cls = regs.methods.get(name)
        given: dict[str, Any] = {}
        for key, values in method_options.items():
            if regs.methods.entry(key).name == name:
                given.update(values)
        options[name] = cls.canonical_options(given)  # validates; defaults left out, so equal runs share one id
    specs = []
    for task_name in tasks:
        task_cls = regs.tasks.get(task_name)
        revisions = data_revisions or {}
        revision = revisions.get(task_name, revisions.get("*"))  # for hub data: a branch, tag or commit
        data = task_cls(data_dir, revision).data_identity().key  # content hash or hub commit; DataError if unreadable
        task_recipe = (recipe(task_name) if callable(recipe) else recipe).to_dict()
        for name in methods:
            cls = regs.methods.get(name)
            method_densities = densities if getattr(cls, "prunes", True) else [1.0]
            for density in method_densities:
                for seed in seeds:
                    specs.append(RunSpec(method=name, task=task_name, backbone=backbone, target_density=float(density),
                                         seed=int(seed), recipe=task_recipe, method_options=options[name],
                                         task_version=task_cls.version, data=data,
                                         data_dir=os.path.abspath(data_dir) if data_dir else None))
    return list({spec.run_id: spec for spec in specs}.values())
