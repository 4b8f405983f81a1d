"""Everything checked before work starts (issue 28, part C): the Python API's errors for every bad argument, types
included. One regression test per finding, on the tiny backbone."""

from __future__ import annotations

import math

import pytest

from grain_bench.errors import UsageError

# ---- 6. the Python API: one UsageError for every bad argument, types included ----------------------------------

BAD_ARGUMENTS = [
    ({"results": None}, "option results=None must be a string"),
    ({"backbone": None}, "option backbone=None must be a string"),
    ({"methods": None}, "option methods=None must be a list"),
    ({"tasks": {"sst2": 1}}, "option tasks={'sst2': 1} must be a list"),
    ({"recipe_options": {"max_steps": math.inf}}, "option max_steps=inf must be an integer"),
    ({"recipe_options": {"lr": 10 ** 400}}, "must be a finite number"),
    ({"seeds": [math.inf]}, "option seeds=inf must be an integer"),
    ({"seeds": [10 ** 400]}, "is not an integer in [0, 2^32)"),
    ({"densities": "half"}, "option densities='half' must be a number"),
    ({"methods": ["dense", "grian"]}, "unknown method 'grian'. Did you mean 'grain'"),
    ({"save_models": None}, "option save_models=None must be true or false"),
    ({"recipe_options": None}, "recipe_options must be a dict"),
]


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("how", ["keywords", "request"])
@pytest.mark.parametrize("bad,expected", BAD_ARGUMENTS, ids=[next(iter(b)) + "-" + str(i)
                                                             for i, (b, _) in enumerate(BAD_ARGUMENTS)])
def test_the_python_api_raises_one_usage_error_for_every_bad_argument(how, bad, expected, tmp_path):
    """Before: raw ``TypeError``/``OverflowError``, or a request holding None as a path; through ``SweepRequest(...)``
    built directly, "unknown method 'd'" for ``methods="dense"`` (the string split into letters)."""
    import grain_bench
    from grain_bench.request import SweepRequest

    choices = {"backbone": "test-bert-tiny", "recipe": "test", "results": str(tmp_path / "r"), **bad}
    with pytest.raises(UsageError) as raised:
        grain_bench.run(**choices) if how == "keywords" else grain_bench.run(SweepRequest(**choices))
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "r").exists()


def test_a_sweep_request_built_directly_holds_what_parse_would():
    """One value or a comma string where a list is expected means the same as through the keywords and the CLI."""
    from grain_bench.request import SweepRequest

    given = {"methods": "dense", "tasks": "tweets", "densities": 0.5, "seeds": 1, "target_speedups": range(2, 4)}
    direct = SweepRequest(**given)
    assert direct == SweepRequest.parse(given)
    assert direct.methods == ("dense",) and direct.tasks == ("tweets",) and direct.densities == (0.5,)
    assert direct.seeds == (1,) and direct.target_speedups == (2.0, 3.0)
