"""The grid of a sweep: methods x tasks x densities x seeds expanded into validated, content-hashed run specs."""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.types import Recipe, RunSpec


def build_specs(regs, methods: list[str], tasks: list[str], densities: list[float], seeds: list[int], backbone: str,
                recipe: Recipe | Callable[[str], Recipe], method_options: dict[str, dict[str, Any]] | None = None,
                data_dir: str | None = None, data_revisions: dict[str, str] | None = None,
                target_speedups: list[float] | None = None) -> list[RunSpec]:
    """The grid methods x tasks x (densities + target speedups) x seeds as run specs (methods that do not prune get
    density 1 once). A target speedup X is a spec with ``target_speedup=X`` and ``target_density=1/X`` (the budget
    as a fraction of the dense model's predicted latency); its ``cost_model`` is set by ``with_cost_models`` once
    the grid is checked. Only methods that prune to a cost model (``Method.prunes_to_cost``) take one.

    ``recipe`` is one recipe for every task, or a function of the task name (``lambda task: get_recipe(name,
    overrides, regs.tasks.get(task))`` applies the values a task declares for a named recipe). Each task's data is
    identified here (``RunSpec.data``: a content hash of the files it reads from ``data_dir`` or its package, or the
    hub commit that ``data_revisions`` ({task or "*": branch, tag or commit}, default each task's ``hub_ref``) names
    now). Every name and option is validated here, before anything runs or is written.
    """
    speedups = list(target_speedups or [])
    _check_grid(methods, tasks, densities, seeds, speedups)
    methods = regs.resolve_methods(methods)
    if speedups:
        _check_takes_speedups(regs, methods)
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
            prunes = getattr(regs.methods.get(name), "prunes", True)
            targets: list[tuple[float, float | None]] = [(float(d), None) for d in (densities if prunes else [1.0])]
            targets += [(1.0 / float(x), float(x)) for x in (speedups if prunes else [])]
            specs += [RunSpec(method=name, task=task_name, backbone=backbone, target_density=density,
                              seed=int(seed), recipe=task_recipe, method_options=options[name],
                              task_version=task_cls.version, data=data,
                              data_dir=os.path.abspath(data_dir) if data_dir else None, target_speedup=speedup)
                      for density, speedup in targets for seed in seeds]
    return list({spec.run_id: spec for spec in specs}.values())


def with_cost_models(specs: list[RunSpec], cost_model_of: Callable[[RunSpec], Any]) -> list[RunSpec]:
    """``specs`` with the cost model of every target-speedup spec set (``cost_model_of(spec)``: a
    ``grain_bench.costs.CostModel``; its key goes into the spec and so into the run id; None, a model a dry run did
    not profile, leaves the spec without one)."""
    out = []
    for spec in specs:
        model = cost_model_of(spec) if spec.target_speedup else None
        out.append(dataclasses.replace(spec, cost_model=model.key) if model is not None else spec)
    return out


def _check_takes_speedups(regs, methods: list[str]) -> None:
    """Every pruning method of a grid with target speedups prunes to a cost model."""
    refused = [name for name in methods if getattr(regs.methods.get(name), "prunes", True)
               and not getattr(regs.methods.get(name), "prunes_to_cost", False)]
    if refused:
        raise UsageError(f"--target-speedup: method(s) {', '.join(refused)} do not prune to a cost model (they reach "
                         f"a density their own way); give them --densities in a separate command, or leave them out")


def _check_grid(methods: list[str], tasks: list[str], densities: list[float], seeds: list[int],
                speedups: list[float]) -> None:
    """Every axis of the grid non-empty (densities or speedups), seeds that numpy takes, densities in (0, 1],
    speedups above 1."""
    for what, items in (("methods", methods), ("tasks", tasks), ("densities or target speedups", densities + speedups),
                        ("seeds", seeds)):
        if not items:
            raise UsageError(f"no {what} given: the grid needs at least one")
    for speedup in speedups:
        if isinstance(speedup, bool) or not isinstance(speedup, numbers.Real) or not speedup > 1 \
                or speedup == float("inf"):
            raise UsageError(f"target speedup {speedup!r} is not a finite number above 1; give speedups over the "
                             f"dense model such as 4,8,12")
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
