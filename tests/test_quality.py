"""Rows a reader can trust: collapse verdicts with their evidence, chance rows, flags, fronts and caption warnings."""

from __future__ import annotations

import os

import numpy as np
import pytest

from grain_bench.quality import assess


def encoded(labels, name="validation"):
    import datasets

    from grain_bench.task import EncodedSplit

    features = datasets.Dataset.from_dict({"labels": list(labels)})
    return EncodedSplit(name, features, features, {})


def logits_for(classes, num_labels=2):
    out = np.zeros((len(classes), num_labels))
    out[np.arange(len(classes)), classes] = 1.0
    return out


LABELS = [0] * 60 + [1] * 40  # majority 0.6


def test_a_classifier_that_predicts_one_class_is_collapsed():
    from grain_bench.tasks.glue import SST2

    verdict = assess(SST2(), logits_for([0] * 100), encoded(LABELS))
    assert verdict["collapsed"]
    assert verdict["summary"]["histogram"] == {"negative": 100, "positive": 0}
    assert any("predicts class 'negative' for every example" in r for r in verdict["reasons"])
    assert verdict["vs_chance"]["difference"] == 0.0


def test_a_classifier_within_noise_of_chance_is_collapsed_and_a_good_one_is_not():
    from grain_bench.tasks.glue import SST2

    rng = np.random.default_rng(0)
    labels = np.asarray(LABELS)
    noisy = np.where(rng.random(100) < 0.9, 0, 1)  # mostly the majority class, a little better than chance at best
    weak = assess(SST2(), logits_for(noisy), encoded(labels))
    assert weak["collapsed"] and any("within noise of a trivial predictor" in r for r in weak["reasons"])
    good = assess(SST2(), logits_for(np.where(rng.random(100) < 0.9, labels, 1 - labels)), encoded(labels))
    assert not good["collapsed"] and good["reasons"] == [] and good["vs_chance"]["low"] > 0


def test_a_constant_regressor_is_collapsed():
    from grain_bench.tasks.glue import STSB

    labels = np.linspace(0, 5, 80)
    constant = assess(STSB(), np.full((80, 1), 2.5) + 1e-4 * np.sin(np.arange(80))[:, None], encoded(labels))
    assert constant["collapsed"] and any("almost no spread" in r for r in constant["reasons"])
    assert constant["summary"]["std"] < 0.01 < constant["summary"]["reference_std"]
    tracking = assess(STSB(), (labels + np.random.default_rng(1).normal(0, 0.5, 80))[:, None], encoded(labels))
    assert not tracking["collapsed"]


# ---- tables and the page ------------------------------------------------------------------------------------------
def with_quality(record, collapsed=False, teacher_collapsed=False, chance=0.6):
    import dataclasses

    from grain_bench.records import Quality

    metric = record.primary_metric
    return dataclasses.replace(record, chance_scores={metric: chance},
                               quality=Quality(collapsed, ("predicts one class",) if collapsed else ()),
                               teacher_quality=Quality(teacher_collapsed))


@pytest.fixture
def flagged_board(tmp_path):
    """tweets: a collapsed random row (all seeds), a half-collapsed heads row, a healthy grain row; stsb: a teacher at
    chance."""
    from test_leaderboard import make_record, write_store

    records = [with_quality(make_record("tweets", "dense", 1.0, 1, 0.85, 0.9))]
    for seed in (1, 2):
        records.append(with_quality(make_record("tweets", "grain", 0.2, seed, 0.80 + 0.01 * seed, 0.9)))
        records.append(with_quality(make_record("tweets", "random", 0.2, seed, 0.60, 0.9), collapsed=True))
        records.append(with_quality(make_record("tweets", "heads", 0.2, seed, 0.70 + 0.2 * seed, 0.9),
                                    collapsed=seed == 1))
    for method, density in (("dense", 1.0), ("grain", 0.2)):
        records.append(with_quality(make_record("stsb", method, density, 1, 0.05, 0.04, metric="pearson"),
                                    teacher_collapsed=True, chance=0.0))
    return write_store(tmp_path / "results", records)


def test_chance_rows_flags_and_fronts(flagged_board):
    from grain_bench.leaderboard.tables import build_report

    report = build_report(flagged_board, versus=None)
    table = report.comparison.table
    tweets = table[table["task"] == "tweets"].set_index("method")
    assert tweets.loc["chance", "score_mean"] == 0.6 and tweets.loc["chance", "relative"] == pytest.approx(0.6 / 0.9)
    assert list(table[table["task"] == "tweets"]["method"])[:3] == ["teacher", "chance", "dense"]
    assert tweets.loc["random", "collapsed_seeds"] == 2 and tweets.loc["heads", "collapsed_seeds"] == 1
    assert tweets.loc["grain", "collapsed_seeds"] == 0
    for method in ("random", "heads", "chance", "teacher"):  # collapses and references are never on a front
        assert not tweets.loc[method, ["pareto_density", "pareto_flops", "pareto_latency"]].any(), method
    assert tweets.loc["grain", "pareto_density"]
    assert report.comparison.teacher_warnings == [
        "stsb: the teacher did not learn this task under this recipe: rows do not compare methods"]
    assert "WARNING stsb: the teacher did not learn this task" in report.caption


def test_markdown_and_page_show_the_flags(flagged_board, tmp_path):
    from grain_bench.leaderboard.site import publish
    from grain_bench.leaderboard.tables import show_table

    text, _ = show_table(flagged_board, "markdown", task="tweets", versus=None)
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| tweets")}
    assert "| collapsed " in lines["random"] and "| collapsed 1/2 " in lines["heads"]
    assert "collapsed" not in lines["grain"] and "**" not in lines["random"] and "**" not in lines["heads"]
    assert lines["chance"].split("|")[6].strip() == "-"  # no seeds for the trivial predictor
    with open(publish(flagged_board, str(tmp_path / "site"), versus=None)) as handle:
        page = handle.read()
    assert page.count('class="collapsed"') == 2 and "the teacher did not learn this task" in page
    assert '<td class="text flag" data-sort="collapsed 1/2">collapsed 1/2</td>' in page


def test_structure_pictures_one_panel_per_pruned_row(tmp_path):
    import dataclasses

    from test_leaderboard import make_record, write_store

    from grain_bench.leaderboard.plots import structure_rows, write_plots
    from grain_bench.leaderboard.site import publish
    from grain_bench.leaderboard.tables import build_report
    from grain_bench.records import DenseShape, RecordShape

    def shaped(record, widths, ffn):
        shape = RecordShape(head_widths=widths, ffn=ffn, dense=DenseShape(num_heads=4, head_dim=8, ffn_dim=64))
        return dataclasses.replace(record, shape=shape)

    records = [make_record("tweets", "dense", 1.0, 1, 0.85),
               shaped(make_record("tweets", "grain", 0.2, 1, 0.8), [[[2, 3], [0, 5], [8, 1]], [[1, 1]]], [10, 3]),
               shaped(make_record("tweets", "heads", 0.2, 1, 0.7), [[[8, 8]], []], [12, 0]),
               make_record("tweets", "random", 0.2, 1, 0.6)]  # an older record: no per-head widths
    results = write_store(tmp_path / "results", records)
    report = build_report(results, versus=None)
    rows = structure_rows(report.comparison.table, report.records)
    assert [label for label, _ in rows] == ["tweets: grain @ 0.2 (seed 1)", "tweets: heads @ 0.2 (seed 1)"]
    paths = write_plots(report.comparison.table, str(tmp_path / "plots"), records=report.records)
    assert sorted(map(os.path.basename, paths)) == ["leaderboard-structure.png", "leaderboard-structure.svg",
                                                    "leaderboard.png", "leaderboard.svg"]
    with open(os.path.join(tmp_path, "plots", "leaderboard-structure.svg")) as handle:
        svg = handle.read()
    assert "grain @ 0.2 (seed 1)" in svg and "L1: 3" in svg and "L2: 0" in svg  # kept heads per layer
    with open(publish(results, str(tmp_path / "site"), versus=None)) as handle:
        assert 'class="structure"' in handle.read()
