"""Check the kwon plugin against the reference code itself (WoosukKwon/retraining-free-pruning), function by function.

The reference is imported from a checkout given on the command line (its code is not copied here: the repository
carries no licence). It needs a GPU and cupy; on a CPU the check runs it with two shims that change no arithmetic:
``Tensor.cuda`` returns the tensor itself, and ``cupy``/``cupyx.scipy.sparse.linalg.lsmr`` are numpy and scipy's LSMR
(the same algorithm cupy ports). Compared, on MiniLM-L6's shapes (6 layers, 12 heads of 32, FFN 1,536) and 64
calibration batches of seeded random gradients, and on random least-squares systems of 2 to 1,537 unknowns:

- ``prune.search.search_mac`` against ``search`` under the reference's MAC cost (every head and neuron kept or not);
- ``prune.rearrange.rearrange_mask`` against ``rearrange`` (heads and neurons);
- ``utils.linalg.lsmr_cupy_solver`` against ``damped_solve`` (largest relative difference of the scales).

    python benchmarks/check_kwon_reference.py --reference PATH [--out benchmarks/results/kwon-reference-check.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import types

import numpy as np
import scipy.sparse.linalg
import torch

from grain_bench.costs import CostModel
from grain_bench.masks import MaskSpace
from grain_bench.methods.kwon import damped_solve, rearrange, search

LAYERS, HEADS, HEAD_DIM, FFN, HIDDEN, SEQ = 6, 12, 32, 1536, 384, 64


def _shim() -> None:
    """Let the reference's GPU code run on this CPU without changing its arithmetic."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    cupy = types.ModuleType("cupy")
    cupy.asarray, cupy.asnumpy = np.asarray, np.asarray  # type: ignore[attr-defined]
    linalg = types.ModuleType("cupyx.scipy.sparse.linalg")
    linalg.lsmr = scipy.sparse.linalg.lsmr  # type: ignore[attr-defined]
    for name, module in (("cupy", cupy), ("cupyx", types.ModuleType("cupyx")),
                         ("cupyx.scipy", types.ModuleType("cupyx.scipy")),
                         ("cupyx.scipy.sparse", types.ModuleType("cupyx.scipy.sparse")),
                         ("cupyx.scipy.sparse.linalg", linalg)):
        sys.modules[name] = module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="a checkout of WoosukKwon/retraining-free-pruning")
    parser.add_argument("--out", default="benchmarks/results/kwon-reference-check.json")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    _shim()
    sys.path.insert(0, args.reference)
    from prune.rearrange import rearrange_mask  # type: ignore[import-not-found]
    from prune.search import search_mac  # type: ignore[import-not-found]
    from utils.linalg import lsmr_cupy_solver  # type: ignore[import-not-found]

    config = types.SimpleNamespace(num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                                   hidden_size=HIDDEN)
    space = MaskSpace(LAYERS, HEADS, HEAD_DIM, FFN, HIDDEN)
    mac = CostModel("mac", "MACs", {"qk_units": 2.0 * SEQ * HIDDEN + SEQ * SEQ,
                                    "vo_units": 2.0 * SEQ * HIDDEN + SEQ * SEQ, "ffn_units": 2.0 * SEQ * HIDDEN},
                    {"num_layers": LAYERS, "num_heads": HEADS, "head_dim": HEAD_DIM, "ffn_dim": FFN,
                     "hidden": HIDDEN})
    report = {"reference": args.reference, "shapes": f"{LAYERS} layers x {HEADS} heads of {HEAD_DIM}, FFN {FFN}, "
                                                     f"seq {SEQ}, 64 batches", "search": [], "rearrange": [],
              "solver": []}
    for trial in range(args.trials):
        generator = torch.Generator().manual_seed(trial)
        head_grads = torch.randn(64, LAYERS, HEADS, generator=generator)
        head_grads = head_grads * (1 + torch.rand(LAYERS, HEADS, generator=generator))
        neuron_grads = torch.randn(64, LAYERS, FFN, generator=generator) * torch.rand(LAYERS, FFN, generator=generator)
        head_fisher, neuron_fisher = head_grads.pow(2).sum(0), neuron_grads.pow(2).sum(0)
        for constraint in (0.6, 0.5, 0.4, 0.3):
            theirs = search_mac(config, head_grads, neuron_grads, SEQ, constraint)
            ours = search(head_fisher, neuron_fisher, space, mac, constraint)
            same = bool(torch.equal(theirs[0].bool(), ours[0]) and torch.equal(theirs[1].bool(), ours[1]))
            report["search"].append({"trial": trial, "constraint": constraint, "equal": same})
            their_heads = rearrange_mask(theirs[0].clone(), head_grads)
            their_neurons = rearrange_mask(theirs[1].clone(), neuron_grads)
            same = bool(torch.equal(their_heads.bool(), rearrange(ours[0], head_grads))
                        and torch.equal(their_neurons.bool(), rearrange(ours[1], neuron_grads)))
            report["rearrange"].append({"trial": trial, "constraint": constraint, "equal": same})
        for unknowns in (2, 13, 200, 1537):
            columns = torch.randn(4 * unknowns + 50, unknowns, generator=generator, dtype=torch.float64)
            ata = columns.t() @ columns
            atb = columns.t() @ (columns @ (1 + 0.3 * torch.randn(unknowns, generator=generator, dtype=torch.float64))
                                 + torch.randn(columns.shape[0], generator=generator, dtype=torch.float64))
            theirs, converged = lsmr_cupy_solver(ata, atb)
            ours, finite = damped_solve(ata, atb)
            difference = float(((theirs - ours).abs() / ours.abs().clamp_min(1e-12)).max())
            report["solver"].append({"trial": trial, "unknowns": unknowns, "reference_converged": bool(converged),
                                     "finite": finite, "max_relative_difference": difference})
    summary = {
        "search_equal": f"{sum(r['equal'] for r in report['search'])}/{len(report['search'])}",
        "rearrange_equal": f"{sum(r['equal'] for r in report['rearrange'])}/{len(report['rearrange'])}",
        "solver_worst_relative_difference": max(r["max_relative_difference"] for r in report["solver"]),
    }
    report["summary"] = summary
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
        handle.write("\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
