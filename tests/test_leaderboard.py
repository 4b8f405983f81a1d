"""Leaderboard: comparisons, exports, plots, the static page and the CLI's handling of bad results directories."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from grain_bench.cli import main
from grain_bench.leaderboard.store import RecordStore
from grain_bench.records import Density, Flops, LatencyEntry, ParamCounts, RunRecord
from grain_bench.types import RunSpec

RECIPE = {"name": "test", "temperature": 2.0, "max_steps": 12, "batch_size": 8, "lr": 0.001, "max_length": 32}
ENV = {"platform": "Linux-x86_64", "processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "device": "cpu",
       "python": "3.11.7"}


def make_record(task="tweets", method="grain", density=0.2, seed=1, score=0.8, teacher=0.9, options=None,
                recipe=None, version="0.1.0", backbone="test-bert-tiny", task_version="1", speedup=None, env=None,
                status="ok", flops_speedup=None, metric="accuracy") -> RunRecord:
    """A synthetic record shaped like the harness's (latency only when ``speedup`` is given)."""
    spec = RunSpec(method=method, task=task, backbone=backbone, target_density=density, seed=seed,
                   recipe=dict(recipe or RECIPE), method_options=dict(options or {}), task_version=task_version,
                   data=f"sha256:{task:0>16}"[:23])  # an identity, as today's writer stores
    latency = []
    if speedup is not None:
        common = dict(device="cpu", dtype="float32", batch=32, seq_len=64, mode="eager", threads=2, iqr_ms=1.0,
                      runs=5, warmup=1)
        latency = [LatencyEntry(label="dense", median_ms=450.0, **common),
                   LatencyEntry(label="compact", median_ms=450.0 / speedup, speedup=speedup, **common)]
    achieved = 1.0 if method == "dense" else density * 1.02
    return RunRecord(
        run_id=spec.run_id, spec=spec, status=status, error=None if status == "ok" else "boom",
        scores={metric: score} if status == "ok" else {}, primary_metric=metric if status == "ok" else None,
        teacher_scores={metric: teacher}, density=Density(target=density, achieved=achieved, encoder_params=achieved),
        params=ParamCounts(encoder=int(17088 * achieved), dense_encoder=17088),
        flops=Flops(predicted_speedup=flops_speedup or 1.0 / max(achieved, 1e-3)), latency=latency,
        versions={"grain-bench": version, "torch": "2.13.0"}, environment=dict(env or ENV),
        created=f"2026-01-0{seed}T00:00:00+00:00")


def grid(tasks=("tweets",), speedups=True) -> list[RunRecord]:
    """Teacher-distilled runs: dense, grain and heads at two densities, three seeds, known scores."""
    records = []
    for task in tasks:
        for seed in (1, 2, 3):
            teacher = 0.90 + 0.01 * seed
            records.append(make_record(task, "dense", 1.0, seed, 0.89 + 0.01 * seed, teacher,
                                       speedup=1.0 if speedups else None))
            for density, base in ((0.5, 0.86), (0.2, 0.80)):
                records.append(make_record(task, "grain", density, seed, base + 0.005 * seed, teacher,
                                           speedup=1.6 / density if speedups else None))
                records.append(make_record(task, "heads", density, seed, base - 0.05 + 0.002 * seed, teacher,
                                           speedup=1.2 / density if speedups else None))
    return records


def write_store(directory, records) -> str:
    store = RecordStore(str(directory))
    for record in records:
        store.append(record)
    lock = store.path + ".lock"
    if os.path.exists(lock):  # the store leaves its lock file; tests want only records.jsonl
        os.remove(lock)
    return str(directory)


def snapshot(directory) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, directory)] = (handle.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture
def board_dir(tmp_path):
    """A results directory with one task of synthetic records, with latency."""
    return write_store(tmp_path / "results", grid())


# ---------------------------------------------------------------- comparisons


def test_summary_means_stds_seeds_teacher_and_relative(board_dir):
    from grain_bench.leaderboard.tables import build_report

    table = build_report(board_dir).comparison.table
    assert list(table["method"][:2]) == ["teacher", "dense"]
    grain = table[(table["method"] == "grain") & (table["target_density"] == 0.2)].iloc[0]
    assert grain["seeds"] == 3
    assert grain["score_mean"] == pytest.approx(0.81)
    assert grain["score_std"] == pytest.approx(0.005)
    teacher = table[table["method"] == "teacher"].iloc[0]
    assert teacher["score_mean"] == pytest.approx(0.92) and teacher["seeds"] == 3
    assert grain["relative"] == pytest.approx(0.81 / 0.92)
    assert grain["speedup"] == pytest.approx(8.0)


def test_relative_score_needs_a_positive_teacher_score(tmp_path):
    from grain_bench.leaderboard.tables import build_report, show_table

    records = [make_record("stsb", "dense", 1.0, 1, 0.25, -0.15, metric="pearson"),
               make_record("stsb", "grain", 0.5, 1, 0.58, -0.15, metric="pearson")]
    directory = write_store(tmp_path / "results", records)
    table = build_report(directory).comparison.table
    assert table["relative"].isna().all()
    assert "-163" not in show_table(directory, "markdown")[0]


def test_relative_score_needs_a_teacher_that_learned(tmp_path):
    """A teacher at MCC 0.00002 (one class predicted: collapsed) gave "35529.2%" of the teacher, and a teacher below the
    chance score gives shares of nothing; such rows show no share, a teacher that learned does."""
    import dataclasses

    from grain_bench.leaderboard.tables import build_report
    from grain_bench.records import Quality

    def record(method, density, score, teacher, metric, chance, collapsed=False):
        made = make_record("cola", method, density, 1, score, teacher, metric=metric)
        return dataclasses.replace(made, chance_scores={metric: chance}, teacher_quality=Quality(collapsed=collapsed))

    mcc = "matthews_correlation"
    for name, rows in (("collapsed", [record("dense", 1.0, 0.01, 0.00002, mcc, 0.0, True),
                                      record("grain", 0.5, 0.0071, 0.00002, mcc, 0.0, True)]),
                       ("below", [record("dense", 1.0, 0.70, 0.60, "accuracy", 0.674),
                                  record("grain", 0.5, 0.69, 0.60, "accuracy", 0.674)])):
        table = build_report(write_store(tmp_path / name, rows)).comparison.table
        assert table["relative"].isna().all(), name
    learned = write_store(tmp_path / "learned", [record("dense", 1.0, 0.40, 0.45, mcc, 0.0),
                                                 record("grain", 0.5, 0.30, 0.45, mcc, 0.0)])
    table = build_report(learned).comparison.table.set_index("method")
    assert table.loc["grain", "relative"] == pytest.approx(0.30 / 0.45)


def test_learned_mask_rows_whose_gates_missed_the_target_are_flagged_not_converged(tmp_path):
    """A CoFi row whose expected density at the freeze is more than 0.01 from its target is flagged "not converged"
    (k/n by seed), is never on a front or best, and a converged one is a result like any other; records from before
    the field are judged by the expected density CoFi logged (``method_info``); other methods are never flagged."""
    import dataclasses

    from grain_bench.leaderboard.tables import build_report, show_table

    def cofi(seed, expected=None, logged=None, score=0.85, landing=None):
        made = make_record("tweets", "cofi", 0.2, seed, score, 0.9, speedup=5.0)
        density = dataclasses.replace(made.density, expected_at_freeze=expected,
                                      gap_at_freeze=None if expected is None else expected - 0.2)
        info = {**({} if logged is None else {"expected_density": logged}),
                **({} if landing is None else {"landing": {"near_zero_share": landing}})}
        return dataclasses.replace(made, density=density, method_info=info)

    records = [make_record("tweets", "dense", 1.0, 1, 0.84, 0.9, speedup=1.0),
               make_record("tweets", "grain", 0.2, 1, 0.80, 0.9, speedup=4.0),
               cofi(1, expected=0.205), cofi(2, expected=0.24), cofi(3, logged=0.889)]
    table = build_report(write_store(tmp_path / "results", records)).comparison.table
    row = table[table["method"] == "cofi"].iloc[0]
    assert row["unconverged_seeds"] == 2 and row["seeds"] == 3  # seed 2 (gap 0.04) and seed 3 (0.689, logged)
    assert not (row["pareto_density"] or row["pareto_flops"] or row["pareto_latency"])  # 0.85 would top all three
    assert table[table["method"] == "grain"].iloc[0]["unconverged_seeds"] == 0
    text = show_table(write_store(tmp_path / "again", records), "markdown")[0]
    assert "not converged 2/3" in text and text.count("not converged") == 1
    converged = write_store(tmp_path / "converged", records[:2] + [cofi(1, expected=0.205), cofi(2, expected=0.195)])
    table = build_report(converged).comparison.table.set_index("method")
    assert table.loc["cofi", "unconverged_seeds"] == 0 and table.loc["cofi", "pareto_density"]
    assert "not converged" not in show_table(converged, "markdown")[0]
    # on target, but the landing spent 3% of the cost on units brought back at a near-zero scale: not what the gates
    # learned either (0.5% is within the tolerance)
    landed = write_store(tmp_path / "landed", records[:2] + [cofi(1, expected=0.2, landing=0.03),
                                                             cofi(2, expected=0.2, landing=0.005)])
    assert build_report(landed).comparison.table.set_index("method").loc["cofi", "unconverged_seeds"] == 1


def test_pareto_fronts(board_dir):
    from grain_bench.leaderboard.tables import build_report

    table = build_report(board_dir).comparison.table
    front = {(r.method, r.target_density) for r in table.itertuples() if r.pareto_density}
    # heads is dominated by grain at the same density; dense is best in score; teacher is never a contender
    assert front == {("dense", 1.0), ("grain", 0.5), ("grain", 0.2)}
    assert set(table.loc[table["pareto_latency"], "method"]) == {"dense", "grain"}


def test_latency_compared_within_one_environment(tmp_path):
    from grain_bench.leaderboard.tables import build_report

    other = dict(ENV, processor="arm64", cpu_count=64)
    records = grid() + [make_record("tweets", "random", 0.2, 1, 0.7, 0.91, speedup=50.0, env=other)]
    report = build_report(write_store(tmp_path / "r", records))
    table = report.comparison.table
    assert math.isnan(table.loc[table["method"] == "random", "speedup"].iloc[0])  # measured elsewhere: not compared
    assert any("other environments" in note and "arm64" in note for note in report.notes)
    assert "x86_64" in report.comparison.latency_environments["tweets"]


def test_a_records_environment_names_the_cpu_model_and_the_latency_label_uses_it(tmp_path):
    """``platform.processor()`` is empty on Linux: a record names the CPU by its model name (``cpu``), and the
    latency environment says it; older records without it keep their label (processor, then platform)."""
    from grain_bench.environment import cpu_name, environment
    from grain_bench.leaderboard.tables import build_report

    assert environment("cpu")["cpu"] == cpu_name() != ""
    named = dict(ENV, cpu="Some CPU 9000")
    records = [make_record("tweets", "dense", 1.0, 1, 0.8, 1.0, speedup=1.0, env=named),
               make_record("tweets", "grain", 0.2, 1, 0.7, 0.2, speedup=4.0, env=named)]
    assert "on Some CPU 9000 (2 CPUs)" in build_report(write_store(tmp_path / "a", records)).caption
    assert "on x86_64 (2 CPUs)" in build_report(write_store(tmp_path / "b", grid())).caption


def test_a_timing_whose_rounds_spread_wider_than_their_median_is_flagged(tmp_path, capsys):
    import dataclasses

    from grain_bench.leaderboard.tables import build_report

    records = grid()
    index = next(i for i, r in enumerate(records) if (r.spec.method, r.spec.target_density, r.spec.seed)
                 == ("grain", 0.2, 2))
    noisy = records[index]
    compact = noisy.latency_of("compact")
    records[index] = dataclasses.replace(noisy, latency=[noisy.latency_of("dense"), dataclasses.replace(
        compact, iqr_ms=compact.median_ms * 1.5)])
    results = write_store(tmp_path / "r", records)
    table = build_report(results).comparison.table
    flags = {(row.method, row.target_density): int(row.noisy_seeds) for row in table.itertuples()
             if row.method in ("grain", "heads", "dense")}
    assert flags == {("dense", 1.0): 0, ("grain", 0.5): 0, ("grain", 0.2): 1, ("heads", 0.5): 0, ("heads", 0.2): 0}
    assert main(["leaderboard", "show", "--results", results]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "noisy timing" in line]
    assert len(lines) == 1 and "| grain " in lines[0] and "0.2 " in lines[0] and "noisy timing 1/3" in lines[0]


@pytest.mark.parametrize("change, field", [
    ({"version": "0.0.9"}, "grain-bench"),
    ({"recipe": dict(RECIPE, lr=0.01)}, "recipe"),
    ({"backbone": "other-bert"}, "backbone"),
    ({"task_version": "2"}, "task_version"),
])
def test_mixed_records_refused_with_what_differs(tmp_path, capsys, change, field):
    directory = write_store(tmp_path / "r", grid() + [make_record(seed=9, **change)])
    before = snapshot(directory)
    assert main(["leaderboard", "export", "--results", directory, "--format", "latex"]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and field in err and "--allow-mixed" in err and "Traceback" not in err
    assert snapshot(directory) == before


def test_backbone_and_recipe_select_one_setup_of_a_mixed_store(tmp_path, capsys):
    """Before: a store with two backbones refused every leaderboard command, and --task could not help."""
    other = [make_record("tweets", method, density, seed, 0.7, 0.8, backbone="other-bert")
             for method, density, seed in (("dense", 1.0, 1), ("grain", 0.5, 1))]
    results = write_store(tmp_path / "r", grid(speedups=False) + other)
    assert main(["leaderboard", "show", "--results", results]) == 2
    assert "--backbone NAME" in capsys.readouterr().err
    assert main(["leaderboard", "show", "--results", results, "--backbone", "other-bert", "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert sum(1 for row in rows if ",grain," in row) == 1 and not any(",heads," in row for row in rows)
    assert main(["leaderboard", "show", "--results", results, "--backbone", "test-bert-tiny", "--recipe", "test"]) == 0
    assert "heads" in capsys.readouterr().out
    assert main(["leaderboard", "show", "--results", results, "--backbone", "nope"]) == 2
    assert "backbones there: other-bert, test-bert-tiny" in capsys.readouterr().err
    assert main(["leaderboard", "export", "--results", results, "--recipe", "quick"]) == 2
    assert "no records with recipe 'quick'" in capsys.readouterr().err


def test_allow_mixed_keeps_setups_apart(tmp_path):
    from grain_bench.leaderboard.tables import build_report

    records = grid() + [make_record(seed=s, score=0.5, version="0.0.9") for s in (1, 2)]
    report = build_report(write_store(tmp_path / "r", records), allow_mixed=True)
    table = report.comparison.table
    assert set(table["setup"]) == {"0.1.0", "0.0.9"}
    old = table[(table["setup"] == "0.0.9") & (table["method"] == "grain")].iloc[0]
    assert old["seeds"] == 2 and old["score_mean"] == pytest.approx(0.5)  # not averaged with the 0.1.0 runs
    assert (table["method"] == "teacher").sum() == 2
    assert "setups differ in grain-bench" in report.caption


# ---------------------------------------------------------------- exports


def test_export_latex_booktabs_bold_pm_caption(board_dir, tmp_path):
    out = tmp_path / "table.tex"
    assert main(["leaderboard", "export", "--results", board_dir, "--format", "latex", "--out", str(out)]) == 0
    tex = out.read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) >= 1
    assert r"$0.8100 \pm 0.0050$" in tex  # grain at 0.2: +- in math mode
    assert r"$\mathbf{0.9100 \pm 0.0100}$" in tex  # dense has the best score: bold
    assert r"$\mathbf{8.00\times}$" in tex  # grain at 0.2 is the fastest
    assert r"$0.9200 \pm 0.0100$ & 3 & 100.0\%" in tex  # the teacher row is never bold
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert "recipe test" in caption and "test-bert-tiny" in caption and "latency measured on cpu" in caption
    assert "grain-bench 0.1.0" in caption


def test_export_every_format(board_dir, capsys):
    for fmt in ("markdown", "csv", "json", "latex"):
        assert main(["leaderboard", "export", "--results", board_dir, "--format", fmt]) == 0
        text = capsys.readouterr().out
        if fmt == "json":
            doc = json.loads(text)
            grain = [r for r in doc["rows"] if r["method"] == "grain" and r["target_density"] == 0.5][0]
            assert grain["seeds"] == 3 and grain["score_mean"] == pytest.approx(0.87)
            assert "recipe test" in doc["caption"]
        elif fmt == "csv":
            header = text.splitlines()[0].split(",")
            assert {"task", "method", "score_mean", "score_std", "seeds", "relative", "pareto_density"} <= set(header)
            assert len(text.splitlines()) == 1 + 6  # teacher, dense, 2 x grain, 2 x heads
        elif fmt == "markdown":
            assert "| tweets | grain    | 0.2" in text and "0.8100 ± 0.0050" in text and "**0.9100 ± 0.0100**" in text


def test_export_refuses_to_write_into_results(board_dir):
    before = snapshot(board_dir)
    target = os.path.join(board_dir, "records.jsonl")
    assert main(["leaderboard", "export", "--results", board_dir, "--format", "csv", "--out", target]) == 2
    assert snapshot(board_dir) == before


def test_show_keeps_working_and_json_is_strict(board_dir):
    from grain_bench.leaderboard.tables import show_table

    text, _ = show_table(board_dir, "markdown", task="tweets", run_ids=None)
    assert "teacher" in text and "grain" in text
    json.loads(show_table(board_dir, "json")[0])


# ---------------------------------------------------------------- corrupt and missing directories


@pytest.mark.parametrize("content", [
    b"{not json\n",
    b"\x00\xff\xfe garbage\n[1, 2]\n",
    b'{"run_id": "x", "spec": "oops", "status": "ok"}\n',
    b'{"run_id": "x", "spec": {"task": "t"}, "status": "ok", "scores": 3}\n',
])
@pytest.mark.parametrize("action", ["show", "export", "publish"])
def test_corrupt_results_clear_message_nothing_changed(tmp_path, capsys, content, action):
    directory = tmp_path / "results"
    directory.mkdir()
    (directory / "records.jsonl").write_bytes(content)
    before = snapshot(directory)
    argv = ["leaderboard", action, "--results", str(directory)]
    if action == "publish":
        argv += ["--out", str(tmp_path / "site")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("grain-bench: error:") and "Traceback" not in err
    assert "records" in err or "record" in err
    assert snapshot(directory) == before
    assert not (tmp_path / "site" / "index.html").exists()


def test_partly_corrupt_results_skip_with_note(board_dir, capsys):
    with open(os.path.join(board_dir, "records.jsonl"), "ab") as handle:
        handle.write(b'{"half": \n')
    before = snapshot(board_dir)
    assert main(["leaderboard", "export", "--results", board_dir, "--format", "markdown"]) == 0
    captured = capsys.readouterr()
    assert "skipped unreadable line 16" in captured.err and "skipped unreadable line 16" in captured.out
    assert snapshot(board_dir) == before


def test_missing_results_and_records_file_as_directory(tmp_path, capsys):
    assert main(["leaderboard", "export", "--results", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "r" / "records.jsonl").mkdir(parents=True)
    assert main(["leaderboard", "publish", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "s")]) == 2
    assert "no records" in capsys.readouterr().err


# ---------------------------------------------------------------- plots and the page


def test_plots_svg_png_with_fallback_label(tmp_path):
    from grain_bench.leaderboard.plots import speedup_axis, write_plots
    from grain_bench.leaderboard.tables import build_report

    table = build_report(write_store(tmp_path / "r", grid(("tweets", "sst2"), speedups=False))).comparison.table
    assert speedup_axis(table) == ("flops_speedup", "FLOPs-predicted speedup (x) - no latency measured")
    svg, png = write_plots(table, str(tmp_path / "plots"))
    text = open(svg, encoding="utf-8").read()
    assert "FLOPs-predicted speedup" in text and "sst2" in text and "tweets" in text
    assert "teacher" in text and "grain" in text and "heads" in text
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    # the same data gives the same SVG (no dates, fixed ids)
    again, _ = write_plots(table, str(tmp_path / "again"))
    assert open(again, encoding="utf-8").read() == text


def test_publish_writes_self_contained_page(board_dir, tmp_path):
    site = tmp_path / "site"
    before = snapshot(board_dir)
    assert main(["leaderboard", "publish", "--results", board_dir, "--out", str(site)]) == 0
    page = (site / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert page.count('<table class="board"') == 1
    assert page.count("<tr data-method=") + page.count('<tr class="teacher"') == 6
    assert "data:image/svg+xml;base64," in page
    assert (site / "plots" / "leaderboard.svg").exists() and (site / "plots" / "leaderboard.png").exists()
    assert json.loads((site / "leaderboard.json").read_text())["rows"][0]["method"] == "teacher"
    assert "torch" in page and "2.13.0" in page and "float32" in page  # details: versions and latency settings
    assert snapshot(board_dir) == before


def test_publish_refuses_site_inside_results(board_dir):
    before = snapshot(board_dir)
    assert main(["leaderboard", "publish", "--results", board_dir, "--out", os.path.join(board_dir, "site")]) == 2
    assert snapshot(board_dir) == before


def test_publish_without_matplotlib_says_what_to_install_and_leaves_nothing(board_dir, tmp_path, capsys,
                                                                              monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in an install without the plots extra
    site = tmp_path / "site"
    assert main(["leaderboard", "publish", "--results", board_dir, "--out", str(site)]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not site.exists()


def test_leaderboard_does_not_import_torch_or_matplotlib(board_dir):
    code = ("import sys; from grain_bench.leaderboard.commands import run; from grain_bench.leaderboard.tables import "
            f"show_table; show_table({board_dir!r}); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_real_tiny_run_exports_and_publishes(tmp_path, capsys):
    results = str(tmp_path / "results")
    code = main(["run", "--backbone", "test-bert-tiny", "--recipe", "test", "--methods", "dense,grain",
                 "--densities", "0.5", "--seeds", "1", "--results", results, "-q", "--no-save-models"])
    assert code == 0
    capsys.readouterr()
    for fmt in ("markdown", "latex", "csv", "json"):
        assert main(["leaderboard", "export", "--results", results, "--format", fmt]) == 0
    assert "grain" in capsys.readouterr().out
    assert main(["leaderboard", "publish", "--results", results, "--out", str(tmp_path / "site")]) == 0
    assert "grain" in (tmp_path / "site" / "index.html").read_text()


def test_samples_print_and_export_a_runs_examples_with_ids_and_gold(tmp_path, capsys, data_dir, builtin_plugins_only,
                                                                     one_thread):
    results = str(tmp_path / "results")
    assert main(["run", "--backbone", "test-bert-tiny", "--recipe", "test", "--methods", "grain", "--tasks", "sst2",
                 "--data-dir", data_dir, "--densities", "0.5", "--seeds", "1", "--results", results, "-q",
                 "--no-save-models", "--no-latency"]) == 0
    # a run's samples: each scored example's id, prediction and gold, by a unique start of its run id
    (record,) = RecordStore(results).latest().values()
    capsys.readouterr()
    out = str(tmp_path / "samples.jsonl")
    assert main(["leaderboard", "samples", record.run_id[:6], "--results", results, "--format", "jsonl",
                 "--out", out]) == 0
    rows = [json.loads(line) for line in open(out)]
    correct = [row["prediction"] == row["gold"] for row in rows]
    assert len(rows) > 3 and len({row["id"] for row in rows}) == len(rows)
    assert sum(correct) / len(rows) == pytest.approx(record.scores["accuracy"])
    assert [row["score"] for row in rows] == [float(c) for c in correct]
    assert main(["leaderboard", "samples", record.run_id, "--results", results, "--limit", "3"]) == 0
    shown = capsys.readouterr().out
    assert f"{len(rows)} scored examples" in shown and f"{len(rows) - 3} more" in shown
    assert main(["leaderboard", "samples", record.run_id, "--results", results, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "id,prediction,gold,score"
    for argv, message in ((["nothere"], "no run 'nothere'"), ([record.run_id, "--format", "squad"], "is sst2"),
                          ([record.run_id, "--out", os.path.join(results, "x.csv")], "refusing to write"),
                          ([record.run_id, "--limit", "0"], "--limit must be a positive")):
        assert main(["leaderboard", "samples", *argv, "--results", results]) == 2
        assert message in capsys.readouterr().err


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


@pytest.mark.usefixtures("builtin_plugins_only")
def test_tables_never_rank_a_non_finite_score_nor_count_its_seed(tmp_path, capsys):
    records = [make_record(method="dense", density=1.0, score=0.8),
               make_record(method="grain", seed=1, score=0.7), make_record(method="grain", seed=2, score=0.72),
               make_record(method="heads", seed=1, score=0.6), make_record(method="heads", seed=2, score=0.65)]
    results = write_store(tmp_path / "results", records)
    with open(os.path.join(results, "records.jsonl"), "a") as handle:  # an old writer's bare tokens
        heads = json.dumps(make_record(method="heads", seed=3, score=0.5).to_dict()).replace("0.5}", "Infinity}", 1)
        grain = json.dumps(make_record(method="grain", seed=3, score=0.5).to_dict()).replace("0.5}", "NaN}", 1)
        handle.write(heads + "\n" + grain + "\n")
    from grain_bench.leaderboard.tables import build_report

    table = build_report(results).comparison.table.set_index("method")
    assert table.loc["heads", "seeds"] == 2 and table.loc["heads", "score_mean"] == pytest.approx(0.625)
    assert table.loc["grain", "seeds"] == 2 and table.loc["grain", "score_mean"] == pytest.approx(0.71)
    assert main(["leaderboard", "show", "--results", results]) == 0
    captured = capsys.readouterr()
    assert "inf" not in captured.out.lower() and "nan" not in captured.out.lower()
    assert "2 run(s) have no finite score" in captured.err
    assert main(["leaderboard", "show", "--results", results, "--format", "json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"bare {token} in JSON export"))


def test_allow_mixed_keeps_each_setups_own_latency(tmp_path):
    """Two setups timed on two machines: under --allow-mixed each keeps its measured speedups (one environment per
    task and setup), and the caption names both environments."""
    from grain_bench.leaderboard.tables import build_report

    other = dict(ENV, processor="arm64", cpu_count=64)
    old = [make_record(method=m, density=d, seed=s, score=0.5, version="0.0.9", speedup=sp, env=other)
           for s in (1, 2) for m, d, sp in (("dense", 1.0, 1.0), ("grain", 0.2, 4.0))]
    report = build_report(write_store(tmp_path / "r", grid() + old), allow_mixed=True)
    table = report.comparison.table
    rows = table[(table["method"] == "grain") & (table["target_density"] == 0.2)].set_index("setup")
    assert rows.loc["0.0.9", "speedup"] == pytest.approx(4.0) and rows.loc["0.1.0", "speedup"] == pytest.approx(8.0)
    envs = report.comparison.latency_environments
    assert "arm64" in envs["tweets (0.0.9)"] and "x86_64" in envs["tweets (0.1.0)"]
    assert not any("other environments" in note for note in report.notes)
    assert "arm64" in report.caption and "x86_64" in report.caption
