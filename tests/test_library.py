"""grain-bench as a library (issue 13): the command form it is specified by, what the wheel ships, the Python API in
a fresh interpreter, timing that leaves the scored model alone, per-task comparability, one id per run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tomllib

from grain_bench.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_options_without_a_command_mean_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = tmp_path / "results"
    assert main(["--methods", "grian,heads", "--tasks", "glue", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'grian'. Did you mean 'grain'" in err and "invalid choice" not in err
    assert not results.exists()
    assert main(["--help"]) == 0 and "Run options without a command mean `run`" in capsys.readouterr().out


def test_every_package_folder_is_in_the_wheel():
    """Each folder with an ``__init__.py`` must be listed in pyproject.toml, or a regular install leaves it out
    (``grain_bench.metrics`` once was: every evaluation of a non-editable install failed)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        config = tomllib.load(handle)["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {"grain_bench": "grain_bench", **config["package-dir"]}
    found = set()
    for package, folder in folders.items():
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            if "__init__.py" in files and "__pycache__" not in root:
                relative = os.path.relpath(root, os.path.join(ROOT, folder))
                found.add(package if relative == "." else f"{package}.{relative.replace(os.sep, '.')}")
    assert found <= listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.parametrize("code", [
    "from grain_bench import load_pruned, compact, save_pruned; print(callable(load_pruned) and callable(compact))",
    "import grain_bench; print(callable(grain_bench.compact) and callable(grain_bench.load_pruned))",
    "import grain_bench.compaction, grain_bench; print(callable(grain_bench.compact))",
    "import grain_bench; print(callable(grain_bench.run) and callable(grain_bench.load_results))",
])
def test_documented_imports_work_in_a_fresh_interpreter(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_timing_in_another_dtype_leaves_the_model_untouched(tiny_model):
    """Timing in another dtype (fp16 on a GPU, bf16 here) times a copy: the weights that are scored and saved are
    bit-for-bit those of before, still fp32."""
    import torch

    from grain_bench.measure import LatencySettings, time_models

    model, _ = tiny_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = LatencySettings(device="cpu", dtype="bf16", batch=2, seq_len=8, threads=1, warmup=1, runs=2)
    results = time_models({"tiny": model}, settings)
    assert results["tiny"].dtype == "bf16" and results["tiny"].runs == 2
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[name]), name


def test_comparability_is_a_per_task_question():
    from test_leaderboard import RECIPE, make_record

    from grain_bench.leaderboard.compare import MixedRecordsError, compare

    long = {**RECIPE, "max_length": 256}
    records = [make_record("sst2", "dense", 1.0), make_record("sst2", "grain", 0.2),
               make_record("squad", "dense", 1.0, recipe=long), make_record("squad", "grain", 0.2, recipe=long)]
    table = compare(records).table
    assert set(table["task"]) == {"sst2", "squad"} and (table["setup"] == "").all()
    with pytest.raises(MixedRecordsError, match="recipe"):
        compare([*records, make_record("squad", "heads", 0.2)])  # squad now mixes two recipes


def test_default_valued_options_name_the_same_run(regs, test_recipe):
    from grain_bench.grid import build_specs

    def run_id(options):
        return build_specs(regs, ["grain"], ["tweets"], [0.2], [1], "test-bert-tiny", test_recipe, options)[0].run_id

    plain = run_id(None)
    assert run_id({"grain": {"alpha": "0.3"}}) == plain
    assert run_id({"grain": {"alpha": "0.3", "beta": "0.998", "gradient_separation": "true"}}) == plain
    assert run_id({"grain": {"alpha": "0"}}) != plain
    spec = build_specs(regs, ["grain"], ["tweets"], [0.2], [1], "test-bert-tiny", test_recipe,
                       {"grain": {"alpha": "0", "beta": "0.998"}})[0]
    assert spec.method_options == {"alpha": 0.0}


def test_records_stored_with_default_options_are_read_under_the_canonical_id(regs, test_recipe, tmp_path):
    """Older writers stored every option; such a record is read under today's id, so resuming skips its run."""
    from grain_bench.grid import build_specs
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.types import RunRecord, RunSpec

    (new,) = build_specs(regs, ["grain"], ["tweets"], [0.05], [1], "test-bert-tiny", test_recipe,
                         {"grain": {"alpha": "0"}})
    full = {"alpha": 0.0, "beta": 0.998, "score": "grad", "gradient_separation": True, "embedding_rank": None}
    old = RunSpec.from_dict({**new.to_dict(), "method_options": full})
    assert old.run_id != new.run_id
    store = RecordStore(str(tmp_path / "results"))
    store.append(RunRecord(run_id=old.run_id, spec=old.to_dict(), status="ok", scores={"accuracy": 0.8},
                           primary_metric="accuracy"))
    (record,) = store.records()
    assert record.run_id == new.run_id and record.spec["method_options"] == {"alpha": 0.0}
    assert record.method_info["previous_run_id"] == old.run_id
    assert store.done() == {new.run_id}


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


def test_saved_models_carry_label_names_and_a_model_card(tmp_path, data_dir, monkeypatch, one_thread):
    import json

    import grain_bench
    from grain_bench import plugins

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    plugins.reset()
    frame = grain_bench.run(methods=["grain"], tasks=["sst2"], densities=[0.5], seeds=[1], backbone="test-bert-tiny",
                            recipe="test", data_dir=data_dir, results=str(tmp_path / "results"), progress=False)
    folder = frame["artifact"].iloc[0]
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    with open(os.path.join(folder, "README.md")) as handle:
        card = handle.read()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "base_model" not in card.split("---")[1]  # the tiny test backbone has no hub id
    score = frame["score"].iloc[0]
    assert f"accuracy {score:.4f}" in card and "`grain` (defaults)" in card and "target 0.5" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card and frame["run_id"].iloc[0] in card
    model = grain_bench.load_pruned(folder)
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_conll_models_name_their_entity_tags(regs, pm, results_dir, test_recipe):
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness

    (spec,) = build_specs(regs, ["dense"], ["conll2003"], [1.0], [1], "test-bert-tiny", test_recipe,
                          data_dir=os.path.join(ROOT, "tests", "data"))
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False)
    model, _ = harness.load_model(spec, regs.tasks.get("conll2003")(spec.data))
    assert model.config.id2label[0] == "O" and model.config.id2label[1] == "B-PER"
    assert len(model.config.id2label) == model.config.num_labels


def test_a_compact_model_of_another_format_version_is_refused_clearly(tmp_path, tiny_model):
    import json

    from grain_bench.compaction import compact, load_pruned, save_pruned
    from grain_bench.errors import UsageError
    from grain_bench.masks import MaskSpace, UnitMasks

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    folder = save_pruned(compact(model, UnitMasks.full(space), space), str(tmp_path / "m"), tokenizer=tokenizer)
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    config["pruned_format_version"] = 99
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    with pytest.raises(UsageError, match="format version 99; this grain-bench .* reads format 1"):
        load_pruned(folder)


def test_every_task_names_as_many_labels_as_its_head_has(regs):
    for entry in regs.tasks.entries.values():
        task = entry.obj
        if task.label_names is not None:
            assert len(task.label_names) == task.num_labels, task.name
            assert task.head in ("sequence", "token"), task.name


# ---- data provenance ------------------------------------------------------------------------------------------
def test_an_edited_data_file_trains_a_new_teacher_and_records_its_provenance(regs, pm, tmp_path, data_dir,
                                                                             test_recipe, one_thread):
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness

    results = str(tmp_path / "results")
    harness = Harness(results, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    (first,) = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    record = harness.run(first)
    assert record.ok, record.error
    assert record.data["key"] == first.data and first.data.startswith("sha256:")
    assert record.data["data_dir"] == data_dir and set(record.data["files"]) == {"train", "validation"}
    dev = os.path.join(data_dir, "SST-2", "dev.tsv")
    with open(dev, "a") as handle:
        handle.write("a brand new review\t1\n")
    record = harness.run(first)  # planned before the edit: refused, not run on other data
    assert record.status == "error" and "is not the data this run was planned with" in record.error
    (second,) = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    assert second.data != first.data and second.run_id != first.run_id
    assert harness.run(second).ok
    teachers = [n for n in os.listdir(os.path.join(results, "teachers")) if not n.startswith(".")]
    assert len(teachers) == 2  # a new teacher for the new data, never the stale one


def test_hub_data_is_pinned_to_the_commit_its_ref_names(tmp_path, monkeypatch):
    """Offline, the commit comes from the hub cache (its layout: datasets--ORG--NAME/refs/REF holds the commit)."""
    from grain_bench.errors import DataError
    from grain_bench.tasks.glue import SST2
    from grain_bench.tasks.squad import SquadV1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    refs = tmp_path / "hub" / "datasets--nyu-mll--glue" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit + "\n")
    identity = SST2().data_identity()
    assert identity.key == f"hub:nyu-mll/glue@{commit}" and identity.revision == commit
    assert SST2(revision="f" * 40).data_identity().key == f"hub:nyu-mll/glue@{'f' * 40}"  # a chosen commit
    with pytest.raises(DataError, match="the hub cache has no copy of rajpurkar/squad"):
        SquadV1().data_identity()


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


def test_every_module_states_its_job_and_the_readme_names_it():
    """Each module opens with a docstring; the README's layout table names every module of the four folders."""
    import ast
    import re

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        layout = handle.read().split("## Layout", 1)[1]
    named = set(re.findall(r"([a-z_]+\.py)", layout))
    for folder in ("grain_bench", "methods", "tasks", "leaderboard"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if not name.endswith(".py") or name in ("__init__.py", "__main__.py"):
                continue
            with open(os.path.join(ROOT, folder, name), encoding="utf-8") as handle:
                assert ast.get_docstring(ast.parse(handle.read())), f"{folder}/{name} has no docstring"
            assert name in named, f"README's layout table does not name {folder}/{name}"


def test_no_import_cycles_between_modules():
    """No module imports (at any depth, function-level imports included) a module that imports it back."""
    import ast

    roots = {"grain_bench": "grain_bench", "grain_bench.methods": "methods", "grain_bench.tasks": "tasks",
             "grain_bench.leaderboard": "leaderboard"}
    modules = {f"{package}.{name[:-3]}" if name != "__init__.py" else package: os.path.join(ROOT, folder, name)
               for package, folder in roots.items() for name in os.listdir(os.path.join(ROOT, folder))
               if name.endswith(".py")}
    graph = {}
    for module, path in modules.items():
        deps = set()
        with open(path, encoding="utf-8") as handle:
            for node in ast.walk(ast.parse(handle.read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grain_bench"):
                    deps.add(node.module)
                    deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
                elif isinstance(node, ast.Import):
                    deps.update(a.name for a in node.names if a.name in modules)
        graph[module] = {d for d in deps if d in modules and d != module and d != "grain_bench"}

    def reaches(start, goal, seen):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = [m for m in graph if reaches(m, m, {m})]
    assert cycles == [], f"import cycles through {cycles}"


@pytest.mark.parametrize("folder", sorted(d for d in os.listdir(os.path.join(ROOT, "benchmarks", "results"))
                                          if os.path.isfile(os.path.join(ROOT, "benchmarks", "results", d,
                                                                         "records.jsonl"))))
def test_committed_results_read_in_the_current_form_and_show_without_allow_mixed(folder, capsys, monkeypatch):
    """Every committed results directory reads through the read-time migration (schema 2: directions from the task,
    the encoder-parameter density) and renders with no --allow-mixed."""
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.types import SCHEMA_VERSION, Density

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    path = os.path.join(ROOT, "benchmarks", "results", folder)
    store = RecordStore(path)
    records = [r for r in store.records() if r.ok]
    assert records and store.problems == []
    for record in records:
        assert record.schema_version == SCHEMA_VERSION
        assert record.higher_is_better[record.primary_metric] is True  # accuracy, F1, Pearson: higher is better
        assert 0 < Density.of(record).encoder_params <= 1
        assert record.spec["data"].startswith("sha256:")
    assert main(["leaderboard", "show", "--results", path]) == 0, capsys.readouterr().err
