"""The method plugins printed in docs/writing-a-method.md run: each code block that defines a plugin is executed,
registered through its hook like an installed plugin, and distilled on the tiny backbone to its target density."""

from __future__ import annotations

import os
import re
import sys

import pytest
import torch
from helpers import ROOT

from grain_bench.backbones import load_tiny
from grain_bench.distill import distill, set_seed
from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.recipes import get_recipe

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "writing-a-method.md")


def plugin_blocks() -> list[str]:
    with open(DOC, encoding="utf-8") as handle:
        blocks = re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S)
    return [block for block in blocks if "class plugin" in block]


def test_the_page_has_both_kinds_of_method():
    blocks = plugin_blocks()
    assert len(blocks) == 2
    assert "masks_for" in blocks[0] and "owns_density = True" in blocks[1]


@pytest.mark.parametrize("index", [0, 1])
def test_doc_plugin_distils_to_its_target(index, one_thread):
    import types

    import pluggy

    from grain_bench import hookspecs
    from grain_bench.harness import TaskData
    from grain_bench.registry import build_registries
    from grain_bench.tasks.tweets import TweetSentiment

    module = types.ModuleType(f"doc_plugin_{index}")  # a real module: dataclasses look their module up
    sys.modules[module.__name__] = module
    exec(compile(plugin_blocks()[index], DOC, "exec"), module.__dict__)
    namespace = module.__dict__
    pm = pluggy.PluginManager("grain_bench")
    pm.add_hookspecs(hookspecs)
    pm.register(namespace["plugin"], name="doc-plugin")
    (name,) = build_registries(pm).methods.names()
    method = build_registries(pm).methods.get(name).from_options({}, seed=1)

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    train = task.encode("train", tokenizer, 32, limit=48)
    data = TaskData(task, tokenizer, train, train, train, task.collate(tokenizer))
    set_seed(1)
    student, _ = load_tiny("sequence", 2)
    result = distill(method, task, teacher.eval(), student, data, get_recipe("test", {"max_steps": 15}), 0.5, seed=1,
                     progress=False)
    space = result.space
    head = space.head_dim * (space.unit_costs["qk"] + space.unit_costs["vo"]) / space.total_cost()
    assert abs(result.masks.density(space) - 0.5) <= head
    batch = data.collate([train.features[i] for i in range(4)])
    with torch.no_grad():
        assert torch.isfinite(result.model(**task.model_inputs(batch)).logits).all()


def test_doc_task_runs_through_the_harness(tmp_path, one_thread):
    import types

    import pluggy

    from grain_bench import hookspecs
    from grain_bench.registry import build_registries

    doc = DOC.replace("writing-a-method.md", "writing-a-task.md")
    with open(doc, encoding="utf-8") as handle:
        (block,) = [b for b in re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S) if "class plugin" in b]
    module = types.ModuleType("doc_task_plugin")
    sys.modules[module.__name__] = module
    exec(compile(block, doc, "exec"), module.__dict__)
    pm = pluggy.PluginManager("grain_bench")
    pm.add_hookspecs(hookspecs)
    pm.register(module.plugin, name="doc-task")
    from grain_bench.methods import baselines

    pm.register(baselines, name="grain_bench.methods.baselines")
    from grain_bench import backbones

    pm.register(backbones, name="grain_bench.backbones")
    regs = build_registries(pm)
    specs = build_specs(regs, ["dense", "random"], ["keyword"], [0.5], [1], "test-bert-tiny", get_recipe("test"))
    harness = Harness(str(tmp_path / "results"), regs=regs, pm=pm, progress=False, save_models=False,
                      measure_latency=False)
    for spec in specs:
        record = harness.run(spec)
        assert record.ok, record.error
        assert record.chance_scores == {"accuracy": 0.5} and 0 <= record.scores["accuracy"] <= 1


def test_docs_link_only_to_files_that_exist_and_install_only_what_installs():
    """Every relative link of README.md and docs/ resolves, and no page tells a user to install grain-bench from an
    index it is not on (``pip install 'grain-bench[ray]'``)."""
    import glob
    import re

    pages = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
    for page in pages:
        with open(page, encoding="utf-8") as handle:
            text = handle.read()
        assert "pip install 'grain-bench" not in text and 'pip install "grain-bench' not in text, page
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert os.path.exists(os.path.join(os.path.dirname(page), target)), f"{page} links to missing {target}"
