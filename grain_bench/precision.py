"""The training precision of a run (the recipe's ``precision``): what the forward passes compute in, and how the
gradients get back to fp32 weights.

- ``fp32``: everything in fp32 (the default on CPU, and the precision GRAIN's match with the reference is checked in);
- ``tf32``: fp32 weights and activations, matrix products in TensorFloat-32 (CUDA, Ampere and later);
- ``bf16``: the forward passes under ``torch.autocast`` in bfloat16 (the default on a CUDA device that supports it),
  fp32 master weights and optimizer state, TF32 for the products autocast leaves in fp32 on CUDA;
- ``fp16``: the same in float16, with a dynamic loss scaler (``torch.amp.GradScaler``) against underflow.

What stays fp32 whatever the precision: the parameters, the optimizer's state, the losses (computed from the outputs
cast back to fp32), the unit gates and their gradients, and so every method's scores and EMAs. A gate multiplies its
activation in the activation's type (``grain_bench.masked``), so one step's gradient of a gate is reduced over the
batch in that type (fp32 accumulation, rounded to 16 bits once) before it is added to fp32 scores. Under ``fp16`` the
gates' gradients are unscaled before a method observes them; a step whose scaled gradients overflow is observed by no
method and skipped by the optimizer, as the scaler skips it.

Calibration passes (``grain_bench.calibrate``: Kwon et al.'s Fisher pass and mask tuning) run in fp32 whatever the
precision; a calibration-only run's retraining steps use it.

``auto`` (what a sweep uses when the recipe names no precision) is ``bf16`` on a CUDA device that supports it and
``fp32`` elsewhere, so that CPU runs keep their ids and stay comparable with every committed CPU figure. bf16 autocast
does run on CPUs: on an AMD EPYC with AVX512-BF16 it trained MiniLM-L6 1.3-1.9x faster than fp32 by step, and fp16
15x slower (``benchmarks/results/train-speed-cpu.md``; docs/gpu.md, "Mixed-precision training"); ask for it with
``-r precision=bf16``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, cast, get_args

import torch

from grain_bench.errors import UsageError
from grain_bench.types import PrecisionName, Recipe

PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def default_precision(device: str | torch.device) -> PrecisionName:
    """``bf16`` on a CUDA device that supports it, else ``fp32``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_precision(precision: str, device: str | torch.device) -> PrecisionName:
    """``precision`` for ``device`` (``auto`` resolved); ``UsageError`` for one the device cannot run."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return default_precision(device)
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise UsageError(f"precision 'tf32' is a CUDA matmul mode; on {torch.device(device).type!r} use fp32, bf16 or "
                         f"fp16")
    return cast(PrecisionName, precision)


def for_device(recipe: Recipe, device: str | torch.device) -> Recipe:
    """``recipe`` with its precision resolved for ``device`` ("auto" made concrete); ``UsageError`` for a precision
    the device cannot train in."""
    precision = resolve_precision(recipe.precision, device)
    return recipe if precision == recipe.precision else dataclasses.replace(recipe, precision=precision)


class MixedPrecision:
    """One run's precision on one device: ``autocast()`` around the forward passes, ``scale``/``step`` around the
    backward passes and optimizer steps, ``matmul()`` around the whole run (TF32 on CUDA). In ``fp32`` each is the
    plain operation, so an fp32 run does exactly what it did before precisions existed."""

    def __init__(self, precision: str, device: str | torch.device):
        self.device = torch.device(device)
        self.name = resolve_precision(precision, self.device)
        self.dtype = _DTYPES.get(self.name)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")
        #: steps whose scaled gradients overflowed (fp16): not observed, not taken
        self.skipped_steps = 0

    @property
    def mixed(self) -> bool:
        """Whether the forward passes run in a 16-bit type."""
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' context: autocast to the 16-bit type, or nothing."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @contextlib.contextmanager
    def matmul(self) -> Iterator[None]:
        """TF32 matrix products on CUDA for ``tf32``, ``bf16`` and ``fp16`` while the run lasts (restored after)."""
        if self.device.type != "cuda" or self.name == "fp32":
            yield
            return
        backends = torch.backends
        saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32
        backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = saved

    def outputs(self, output):
        """A model output with its floating tensors (and tuples of them) in fp32: losses are computed in fp32."""
        if self.dtype is None:
            return output
        for key, value in output.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                output[key] = value.float()
            elif isinstance(value, tuple):
                output[key] = tuple(v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                    for v in value)
        return output

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate (times the loss scale under ``fp16``)."""
        return self.scaler.scale(loss)

    def unscaled(self, grads):
        """Gradients of the gates (``UnitTensors``) as the unscaled loss gives them; None where they overflowed."""
        if not self.scaler.is_enabled() or grads is None:
            return grads
        inverse = 1.0 / self.scaler.get_scale()
        grads = grads.map(lambda t: t * inverse)
        finite = all(bool(torch.isfinite(t).all()) for t in (grads.qk, grads.vo, grads.ffn))
        return grads if finite else None

    def step(self, optimizers: Iterable[torch.optim.Optimizer], clip_params: list, clip: float) -> bool:
        """Clip the (unscaled) gradients of ``clip_params`` to norm ``clip`` and step every optimizer; returns whether
        the step was taken (under ``fp16`` the scaler skips a step whose gradients overflowed)."""
        optimizers = list(optimizers)
        if not self.scaler.is_enabled():
            torch.nn.utils.clip_grad_norm_(clip_params, clip)
            for optimizer in optimizers:
                optimizer.step()
            return True
        # an optimizer none of whose parameters has a gradient this step (a learned-mask method's gates once frozen)
        # steps as in fp32, not at all; the scaler refuses to step it
        optimizers = [optimizer for optimizer in optimizers
                      if any(p.grad is not None for group in optimizer.param_groups for p in group["params"])]
        if not optimizers:
            return True
        for optimizer in optimizers:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(clip_params, clip)
        scale = self.scaler.get_scale()
        for optimizer in optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        taken = self.scaler.get_scale() >= scale  # the scale falls exactly when the step was skipped
        self.skipped_steps += not taken
        return taken

    def describe(self) -> dict[str, Any]:
        """What a record keeps: the precision and, under fp16, the steps the scaler skipped."""
        out: dict[str, Any] = {"precision": self.name}
        if self.scaler.is_enabled():
            out["skipped_steps"] = self.skipped_steps
        return out
