"""The ragged-width attention kernel (grain_bench.ragged, kernels/ragged_attention.c): it computes what per-head
attention computes, for heads of any widths, lengths and masks; it is built once and cached; it is used for inference
only; and a missing or failing compiler is a clear error."""

from __future__ import annotations

import os

import pytest
import torch

MIN = torch.finfo(torch.float32).min


def _reference(qkv, qk_dims, vo_dims, mask, scale):
    """Per-head softmax(scale q k^T + mask) v in float64, the contexts packed head by head."""
    qk_total = sum(qk_dims)
    x = qkv.double()
    contexts, q_start, v_start = [], 0, 2 * qk_total
    for qk, vo in zip(qk_dims, vo_dims):
        q = x[..., q_start: q_start + qk]
        k = x[..., qk_total + q_start: qk_total + q_start + qk]
        v = x[..., v_start: v_start + vo]
        scores = scale * q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask[:, 0].double()
        contexts.append(torch.softmax(scores, dim=-1) @ v)
        q_start, v_start = q_start + qk, v_start + vo
    return torch.cat(contexts, dim=-1)


def _masks(batch, length, generator):
    """None, a padding mask broadcast over queries, the same expanded (stride 0) and a full per-query mask."""
    padding = torch.zeros(batch, 1, 1, length)
    padding[0, ..., length // 2 + 1:] = MIN
    full = torch.where(torch.rand(batch, 1, length, length, generator=generator) < 0.3, MIN, 0.0)
    full[..., 0] = 0.0  # every query attends to something
    return {"none": None, "padding": padding, "expanded": padding.expand(batch, 1, length, length), "full": full}


@pytest.mark.parametrize("batch,length", [(1, 1), (1, 9), (3, 16), (2, 17), (2, 40), (1, 70)])
def test_kernel_matches_per_head_attention_for_ragged_widths(batch, length):
    from grain_bench.ragged import RaggedLayout

    generator = torch.Generator().manual_seed(batch * 100 + length)
    # widths 1 to 33 (across the 4 x 16-lane tiles), a head without query units, a head one unit wide
    qk_dims, vo_dims = [5, 0, 1, 33, 12, 3], [7, 4, 1, 2, 33, 16]
    layout = RaggedLayout(qk_dims, vo_dims)
    channels = 2 * sum(qk_dims) + sum(vo_dims)
    qkv = torch.randn(batch, length, channels + 6, generator=generator)  # trailing channels (alignment) are ignored
    for name, mask in _masks(batch, length, generator).items():
        got = layout(qkv, mask, 0.17)
        expected = _reference(qkv[..., :channels], qk_dims, vo_dims, mask, 0.17)
        assert got.shape == (batch, length, sum(vo_dims))
        assert torch.allclose(got.double(), expected, atol=2e-5), (name, float((got - expected).abs().max()))


def test_kernel_reads_a_strided_qkv_and_refuses_wrong_inputs():
    from grain_bench.errors import GrainBenchError
    from grain_bench.ragged import RaggedLayout

    layout = RaggedLayout([2, 3], [4, 1])
    wide = torch.randn(2, 5, 30)
    view = wide[..., :15]  # rows 30 apart: the GEMM output of a wider layout
    assert torch.allclose(layout(view, None, 0.5).double(), _reference(view, [2, 3], [4, 1], None, 0.5), atol=2e-5)
    with pytest.raises(GrainBenchError, match="at least 15 channels, got torch.float32 on cpu with 14"):
        layout(wide[..., :14], None, 0.5)
    with pytest.raises(GrainBenchError, match="fp32 CPU inputs"):
        layout(view.double(), None, 0.5)
    with pytest.raises(GrainBenchError, match=r"additive mask \[batch, 1, 1 or 5, 5\], got \[2, 5, 5\]"):
        layout(view, torch.zeros(2, 5, 5), 0.5)
    with pytest.raises(GrainBenchError, match="additive float mask .* got torch.bool"):
        layout(view, torch.ones(2, 1, 1, 5, dtype=torch.bool), 0.5)


def test_kernel_is_built_once_per_source_and_cpu_and_failures_are_explained(tmp_path, monkeypatch):
    from grain_bench import ragged
    from grain_bench.errors import GrainBenchError

    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", str(tmp_path / "cache"))
    path = ragged.build()
    assert path.startswith(str(tmp_path / "cache")) and os.path.isfile(path)
    built = os.stat(path).st_mtime_ns
    assert ragged.build() == path and os.stat(path).st_mtime_ns == built  # cached: not rebuilt
    assert sorted(os.listdir(tmp_path / "cache")) == [os.path.basename(path), os.path.basename(path) + ".sha256"]

    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(GrainBenchError, match="needs a C compiler to build its kernel: .*no-such-compiler.* was not "
                                              "found"):
        ragged.build()
    monkeypatch.setenv("CC", "false")  # a compiler that fails, with and without -march=native and -fopenmp
    with pytest.raises(GrainBenchError, match="could not build its kernel with the C compiler:\n.*-march=native.*\n"
                                              ".*-fopenmp.*\n(?!.*-fopenmp)"):
        ragged.build()


def test_the_kernel_serves_inference_only(tiny_model):
    """With the kernel set, a forward pass with gradients (training) keeps the bucket layout and its gradients; one
    without gradients calls the kernel, with the same outputs."""
    from test_compact import _inputs
    from test_runtimes import _compact_with_odd_heads

    from grain_bench.modeling_pruned_bert import PrunedBertAttention
    from grain_bench.ragged import RaggedLayout, kernel_of, use_kernel

    small = _compact_with_odd_heads(tiny_model)
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        expected = small(**inputs).logits
    calls = []

    def counting(layout):
        def kernel(*args):
            calls.append(1)
            return layout(*args)
        return kernel

    blocks = [block for block in small.modules() if isinstance(block, PrunedBertAttention) and block.num_heads]
    for block in blocks:
        use_kernel(block, counting(RaggedLayout(block.qk_dims, block.vo_dims)))
    with torch.no_grad():
        assert float((small(**inputs).logits - expected).abs().max()) <= 1e-5
    assert len(calls) == len(blocks)
    logits = small(**inputs).logits  # gradients on: the bucket layout
    logits.sum().backward()
    assert len(calls) == len(blocks)
    assert all(block.qkv.weight.grad is not None and block.qkv.weight.grad.abs().sum() > 0 for block in blocks)
    for block in blocks:
        use_kernel(block)
        assert kernel_of(block) is None
