"""Few-row float32 products (``fewrow.c``) for generation's decoder step.

A decoder step multiplies 1-8 rows (the beams) by every decoder weight and attends 1-8 queries per input
over the cached cross-attention keys/values: its floor is reading those bytes once. On the CPUs we measured,
MKL reads a weight at about half the memory bandwidth for so few rows; ``fewrow.c`` reads it at close to the
bandwidth (``benchmarks/bench_generate.py`` prints both). It is built and loaded with the other compiled
kernels (``kernels.py``); where they cannot be used every function here returns ``None`` and the decoder step
uses torch's products.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import kernels

MAX_ROWS = kernels.FEWROW_MAX_ROWS
library = kernels.library
disabled = kernels.disabled


def _products(weight: torch.Tensor, x: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor) -> None:
    """out[..., r, n] = x[..., r, :] . weight[..., n, :] (+ bias[n]) over the leading (batch) dimensions."""
    lib = library()
    rows, k = x.shape[-2:]
    n = weight.shape[-2]
    batch = out.numel() // (rows * n) if out.numel() else 0
    with kernels.profiled(lambda: f"fewrow::products batch={batch} rows={rows} n={n} k={k}"):
        status = lib.fewrow_linear(weight.data_ptr(), n * k, x.data_ptr(), rows * k, k,
                                   None if bias is None else bias.data_ptr(), out.data_ptr(), rows * n, n,
                                   batch, n, k, rows, torch.get_num_threads())
    if status != 0:
        raise ValueError(f"fewrow_linear takes 1-{MAX_ROWS} rows, got {rows}")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``F.linear(x, weight, bias)`` for x of 1..8 rows (rows, in), or None where the library cannot do it."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_ROWS or torch.is_grad_enabled():
        return None
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not kernels.usable(*tensors) or library() is None:  # (on a GPU the CPU kernels are never built)
        return None
    out = x.new_empty((x.shape[0], weight.shape[0]))
    _products(weight, x, bias, out)
    return out


def batched_products(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.Tensor]:
    """``x @ weight.transpose(-1, -2)`` for x (..., rows, k) of 1..8 rows and weight (..., n, k) with the same
    leading dimensions, or None where the library cannot do it. Cross-attention in one step: queries times
    keys (n = positions), and probabilities times the transposed values (n = head_dim)."""
    if (x.dim() < 3 or x.shape[:-2] != weight.shape[:-2] or x.shape[-1] != weight.shape[-1]
            or not 1 <= x.shape[-2] <= MAX_ROWS or torch.is_grad_enabled() or not kernels.usable(x, weight)
            or library() is None):
        return None
    out = x.new_empty((*x.shape[:-1], weight.shape[-2]))
    _products(weight, x, None, out)
    return out
