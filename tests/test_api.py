"""The Python API: ``grain_bench.run`` and ``load_results``."""

from __future__ import annotations

import json
import os
import shutil

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

    # a results folder copied elsewhere is whole: its rows name its own saved models and predictions, not the original's
    copy = str(tmp_path / "copy")
    shutil.copytree(results, copy)
    shutil.rmtree(results)
    moved = grain_bench.load_results(copy).set_index("method").loc["grain"]
    assert moved["artifact"] == os.path.join(copy, "models", grain["run_id"]) and os.path.isdir(moved["artifact"])
    assert moved["predictions"].startswith(copy + os.sep) and os.path.isfile(moved["predictions"])
    assert grain_bench.load_pruned(moved["artifact"]).config.num_hidden_layers > 0
    # records from before paths were relative name the original folder's files: a copy still resolves to its own
    path = os.path.join(copy, "records.jsonl")
    with open(path) as handle:
        lines = [json.loads(line) for line in handle]
    for line in lines:
        if line["artifact"]:
            line["artifact"] = os.path.join(results, line["artifact"])  # absolute, in the folder removed above
    with open(path, "w") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    older = grain_bench.load_results(copy).set_index("method").loc["grain"]
    assert older["artifact"] == moved["artifact"]
    # every metric's standard error over the scored examples, beside the score
    assert 0 < grain["se.accuracy"] < 0.5


def grain_bench_errors():
    import grain_bench.errors

    return grain_bench.errors


def test_a_sweep_request_declares_every_default_once_and_refuses_what_it_cannot_hold(tmp_path):
    """The CLI's help reads its defaults from ``SweepRequest``; the API converts a single value or a comma string
    where a list is expected, and names the field of a wrong value or an unknown keyword."""
    import grain_bench
    from grain_bench.cli import build_parser
    from grain_bench.errors import UsageError
    from grain_bench.request import SweepRequest, default

    request = SweepRequest.parse({"densities": 0.5, "methods": "grain,heads", "seeds": [1, 2]})
    assert request.densities == (0.5,) and request.methods == ("grain", "heads") and request.seeds == (1, 2)
    assert SweepRequest.from_dict(request.to_dict()) == request  # what an executor ships to a worker
    assert request.replace(seeds=[3]).seeds == (3,) and request.replace(seeds=[3]).methods == request.methods
    text = next(a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions
                if "--recipe" in a.option_strings).help
    assert f"(default: {default('recipe')})" in text
    with pytest.raises(UsageError, match="unknown option 'metods'. Did you mean 'methods'"):
        grain_bench.run(metods=["grain"], results=str(tmp_path / "r"))
    with pytest.raises(UsageError, match="option seeds='one' must be an integer"):
        grain_bench.run(seeds=["one"], results=str(tmp_path / "r"))
    with pytest.raises(UsageError, match="method_options must be a dict"):
        grain_bench.run(method_options=["grain"], results=str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_records_name_the_commit_they_were_made_from(tmp_path):
    """From a checkout, ``versions`` carries the git commit (``+dirty`` with uncommitted changes to tracked files); the
    version number alone is the same on every commit. A copy of the package outside any checkout names none."""
    import subprocess
    import sys

    from grain_bench.environment import package_versions, source_commit

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    commit = package_versions()["grain-bench-commit"]
    assert commit.split("+")[0] == head.stdout.strip() and commit == source_commit()
    assert commit.endswith("+dirty") == bool(subprocess.run(
        ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip())
    (tmp_path / "grain_bench").mkdir()
    shutil.copy(os.path.join(root, "grain_bench", "environment.py"), tmp_path / "grain_bench")
    out = subprocess.run([sys.executable, "-c", "import importlib.util, sys; spec = importlib.util.spec_from_file_"
                          "location('env', sys.argv[1]); m = importlib.util.module_from_spec(spec); "
                          "spec.loader.exec_module(m); print(m.source_commit())",
                          str(tmp_path / "grain_bench" / "environment.py")], capture_output=True, text=True)
    assert out.stdout.strip() == "None", out.stderr
