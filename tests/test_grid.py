"""The grid: methods x tasks x densities x seeds expanded into content-hashed run specs."""

from __future__ import annotations

from grain_bench.grid import build_specs


def test_default_valued_options_name_the_same_run(regs, test_recipe):

    def run_id(options):
        return build_specs(regs, ["grain"], ["tweets"], [0.2], [1], "test-bert-tiny", test_recipe, options)[0].run_id

    plain = run_id(None)
    assert run_id({"grain": {"alpha": "0.3"}}) == plain
    assert run_id({"grain": {"alpha": "0.3", "beta": "0.998", "gradient_separation": "true"}}) == plain
    assert run_id({"grain": {"alpha": "0"}}) != plain
    spec = build_specs(regs, ["grain"], ["tweets"], [0.2], [1], "test-bert-tiny", test_recipe,
                       {"grain": {"alpha": "0", "beta": "0.998"}})[0]
    assert spec.method_options == {"alpha": 0.0}
