"""The encoder's sliding-window attention in float32 inference on the CPU, through ``band_attention.c``.

``LEDEncoderSelfAttention`` computes the local part blocked: each block of ``w`` queries attends the ``3w``
keys around it through ``scaled_dot_product_attention``, with the keys outside each query's band masked, so
it multiplies 1.5x the products the band needs and copies every block's keys and values. ``band_attention.c``
computes each query's band only (tiles of 6 queries, ~1.02x) straight from the projections; on the 2-core
AMD EPYC we measured it takes about half the time of the blocked SDPA at led-base's shape
(``benchmarks/bench_encoder_attention.py`` prints both). The numbers are the same to float32 rounding (a
different order of the same sums; tests/test_band_attention.py).

It is built and loaded with the other compiled kernels (``kernels.py``). ``local_attention`` returns None
wherever it does not apply (autograd on, dropout, not float32 on the CPU, a head size that is not a multiple
of 8, tracing for an export, or no kernels) and the caller keeps the SDPA path.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import kernels


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout, one_sided: int,
                    dropout: float = 0.0) -> Optional[torch.Tensor]:
    """The local part of every query, (B, L, H*D), from q, k, v (B, L, H, D) (q not yet scaled), or None
    where the kernel does not apply. ``layout``: the pass's ``EncoderMaskLayout``."""
    batch, length, heads, head_dim = q.shape
    if (dropout or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or head_dim % 8 or head_dim > 1024):
        return None
    lib = kernels.library() if kernels.usable(q, k, v) else None  # (on a GPU the CPU kernels are never built)
    if lib is None:
        return None
    key_ok = layout.scratch_of("band_key_ok", lambda: (~(layout.is_pad | layout.is_global)).to(torch.uint8))
    slot_ok = layout.scratch_of("band_slot_ok", lambda: layout.global_slot_valid.to(torch.uint8))
    global_keys = layout.gather_global(k).contiguous()  # (B, G, H, D), the local projections
    global_values = layout.gather_global(v).contiguous()
    scratch = layout.scratch("band_scratch", (lib.band_attention_scratch_floats(batch, length, heads, head_dim),), q)
    if scratch.data_ptr() % 32:
        return None  # (torch's CPU allocations are 64-byte aligned; the packed keys are read 32 bytes at a time)
    out = q.new_empty(batch, length, heads * head_dim)
    with kernels.profiled(lambda: f"band_attention B={batch} L={length} H={heads} D={head_dim} w={one_sided}"):
        status = lib.band_attention(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), batch, length, heads, head_dim, one_sided,
            key_ok.data_ptr(), global_keys.data_ptr(), global_values.data_ptr(), slot_ok.data_ptr(),
            layout.num_global, head_dim**-0.5, out.data_ptr(), scratch.data_ptr(), torch.get_num_threads())
    if status == -2:
        raise MemoryError("band_attention could not allocate its per-thread scores (about 200 KB per thread)")
    if status != 0:
        raise ValueError(f"band_attention takes head sizes that are multiples of 8 up to 1024, got {head_dim}")
    return out
