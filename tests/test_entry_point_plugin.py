"""A third-party method package loads through its entry point, obeys GRAIN_BENCH_LOAD_PLUGINS and runs end to end."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from grain_bench import plugins

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "grain-bench-toy-method")


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """Put the example package on sys.path with a dist-info carrying its entry point (what pip install writes)."""
    dist = tmp_path / "grain_bench_toy_method-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: grain-bench-toy-method\nVersion: 0.1.0\n")
    with open(os.path.join(EXAMPLE, "pyproject.toml")) as handle:
        text = handle.read()
    assert '[project.entry-points.grain_bench]' in text and 'toy = "grain_bench_toy:plugin"' in text
    (dist / "entry_points.txt").write_text("[grain_bench]\ntoy = grain_bench_toy:plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(os.path.join(EXAMPLE, "src"))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("grain_bench_toy", None)
    plugins.reset()


def test_entry_point_loads_and_can_be_switched_off(installed_example, monkeypatch):
    from grain_bench.registry import build_registries

    monkeypatch.delenv(plugins.ENV_LOAD_PLUGINS, raising=False)
    regs = build_registries(plugins.make_plugin_manager())
    assert "toy-magnitude-ffn" in regs.methods
    assert regs.methods.entry("toy-magnitude-ffn").plugin == "toy"
    monkeypatch.setenv(plugins.ENV_LOAD_PLUGINS, "")
    assert "toy-magnitude-ffn" not in build_registries(plugins.make_plugin_manager()).methods
    monkeypatch.setenv(plugins.ENV_LOAD_PLUGINS, "toy")
    pm = plugins.make_plugin_manager()
    assert "toy-magnitude-ffn" in build_registries(pm).methods
    assert plugins.plugin_versions(pm)["toy"] == "grain-bench-toy-method 0.1.0"


def test_entry_point_method_runs_through_the_harness(installed_example, monkeypatch, results_dir, test_recipe):
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.registry import build_registries
    from grain_bench.sweep import run_sweep

    monkeypatch.setenv(plugins.ENV_LOAD_PLUGINS, "toy")
    pm = plugins.make_plugin_manager()
    regs = build_registries(pm)
    specs = build_specs(regs, ["toy-magnitude-ffn"], ["tweets"], [0.6], [1], "test-bert-tiny", test_recipe,
                        {"toy-magnitude-ffn": {"keep_attention": "true"}})
    store = RecordStore(results_dir)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    (record,) = run_sweep(specs, harness, store, progress=False)
    assert record.ok, record.error
    assert record.spec.method == "toy-magnitude-ffn"
    assert record.shape.qk == (32, 32) and record.shape.vo == (32, 32)  # attention untouched
    assert abs(record.density.achieved - 0.6) < 0.01
    assert "plugin:toy" in record.versions


def test_entry_point_task_and_table_format(installed_example, monkeypatch, tmp_path, capsys):
    """The example package's task runs end to end and its table format renders the leaderboard."""
    from grain_bench.cli import main

    monkeypatch.setenv(plugins.ENV_LOAD_PLUGINS, "toy")
    plugins.reset()
    results = str(tmp_path / "results")
    code = main(["--methods", "dense,toy-magnitude-ffn", "--tasks", "toy-keyword", "--backbone", "test-bert-tiny",
                 "--recipe", "test", "--densities", "0.6", "--results", results, "-q", "--no-latency",
                 "--format", "toy-tsv", "-o", "toy-magnitude-ffn.keep_attention=false"])
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line]
    assert lines[0] == "task\tmethod\ttarget\tscore"
    assert {line.split("\t")[1] for line in lines[1:]} == {"teacher", "chance", "dense", "toy-magnitude-ffn"}
    assert main(["leaderboard", "show", "--results", results, "--format", "toy-tsvv"]) == 2
    assert "unknown format 'toy-tsvv'. Did you mean 'toy-tsv'" in capsys.readouterr().err
