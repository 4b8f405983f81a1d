"""A complete third-party grain-bench method: prune FFN neurons (optionally attention too) by weight magnitude."""

from dataclasses import dataclass

from grain_bench import hookimpl
from grain_bench.masks import prune_to_density
from grain_bench.masked import unit_weight_norms
from grain_bench.method import Method, MethodOptions


@dataclass(frozen=True)
class ToyOptions(MethodOptions):
    keep_attention: bool = True  # never prune query/value units


class ToyMagnitudeFfn(Method):
    """Rank units by the L2 norm of their weights; attention is left alone unless keep_attention=false."""

    name = "toy-magnitude-ffn"
    Options = ToyOptions

    def masks_for(self, state, density):
        scores = unit_weight_norms(state.model, state.space)
        if self.options.keep_attention:
            scores.qk.fill_(float("inf"))
            scores.vo.fill_(float("inf"))
        return prune_to_density(scores, state.masks, state.space, density)


class plugin:  # noqa: N801 - the entry point names this object
    @hookimpl
    def register_methods(register):
        register(ToyMagnitudeFfn)
