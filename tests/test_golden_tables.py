"""A refactor leaves every committed table as it was: each rendering of each committed results directory equals its
golden file (``tests/golden_tables.py`` says how they are made and when to regenerate them)."""

from __future__ import annotations

import difflib
import os

import pytest
from golden_tables import COMMITTED, GOLDEN, RESULTS, render_all


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_tables_render_as_their_golden_files(name, pm):
    rendered = render_all(os.path.join(RESULTS, name))
    expected = sorted(os.listdir(os.path.join(GOLDEN, name)))
    assert sorted(rendered) == expected
    for file, text in rendered.items():
        with open(os.path.join(GOLDEN, name, file), encoding="utf-8") as handle:
            golden = handle.read()
        if text != golden:
            diff = "".join(list(difflib.unified_diff(golden.splitlines(True), text.splitlines(True), f"golden/{file}",
                                                     f"rendered/{file}"))[:40])
            pytest.fail(f"{name}/{file} renders differently from its golden file:\n{diff}")
