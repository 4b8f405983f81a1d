"""The Python API: ``grain_bench.run`` and ``load_results``."""

from __future__ import annotations

import os

import pytest


def test_python_api_runs_a_grid_and_loads_it_back(tmp_path, data_dir, monkeypatch, one_thread):
    import grain_bench
    from grain_bench import plugins

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    plugins.reset()
    results = str(tmp_path / "results")
    frame = grain_bench.run(methods=["dense", "grain"], tasks=["sst2"], densities=[0.5], seeds=[1],
                            backbone="test-bert-tiny", recipe="test", method_options={"grain": {"alpha": 0.1}},
                            data_dir=data_dir, results=results, measure_latency=False, progress=False)
    assert sorted(frame["method"]) == ["dense", "grain"] and (frame["status"] == "ok").all()
    grain = frame.set_index("method").loc["grain"]
    assert grain["options"] == {"alpha": 0.1} and grain["target_density"] == 0.5
    assert grain["metric"] == "accuracy" and grain["score"] == grain["score.accuracy"]
    assert grain["achieved_density"] == pytest.approx(0.5, abs=0.01) and os.path.isdir(grain["artifact"])
    assert grain["chance.accuracy"] == 0.5 and grain["teacher.accuracy"] > 0.5
    again = grain_bench.load_results(results)
    assert again.sort_values("run_id").reset_index(drop=True).equals(frame.sort_values("run_id").reset_index(drop=True))
    again = grain_bench.run(methods=["dense"], tasks=["sst2"], densities=[0.5], seeds=[1], backbone="test-bert-tiny",
                            recipe="test", data_dir=data_dir, results=results, progress=False)
    assert list(again["run_id"]) == list(frame.set_index("method").loc[["dense"], "run_id"])  # nothing re-ran
    with pytest.raises(grain_bench_errors().UsageError, match="option alpha=-1.0 must be >= 0"):
        grain_bench.run(methods=["grain"], method_options={"grain": {"alpha": -1}}, results=results)


def grain_bench_errors():
    import grain_bench.errors

    return grain_bench.errors
