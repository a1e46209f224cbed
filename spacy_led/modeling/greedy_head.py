"""Greedy search's next token through an int8 copy of the LM head, with the float32 argmax guaranteed.

A greedy step keeps only ``argmax_i e_i``, e_i = h . w_i + b_i, of the LM head's logits, yet reading its
float32 weights (led-base: 50,265 x 768, 154 MB) is a third of a step's bytes at 4k input tokens. Here the
step reads an int8 copy instead (a quarter of the bytes; per-row scale s_i = max_k |w_ik| / 127, q_i =
round(w_i / s_i)), whose logits a_i = s_i (h . q_i) + b_i come with a proven bound r_i on their distance from
the float32 logits e_i that the full product (``fewrow.linear``) computes:

    |e_i - a_i| <= r_i = ||h|| (||w_i - s_i q_i|| + 2 gamma_K (||w_i|| + s_i ||q_i||)) + 2^-20 (|a_i| + |b_i|)

- ||w_i - s_i q_i|| ||h|| bounds the quantization's share (Cauchy-Schwarz);
- gamma_K = K u / (1 - K u), u = 2^-24, bounds the rounding of a float32 sum of K products in any order
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5), once for the float32 sum of
  w_i h and once for that of q_i h, each at most gamma_K sum_k |x_k h_k| <= gamma_K ||x|| ||h||; the factor 2
  leaves room for the other roundings of the bound's own arithmetic;
- 2^-20 (|a_i| + |b_i|) covers the roundings of the scale's product and of the bias's sum (a few u each).

The token with the largest e_i then lies among the candidates whose a_i + r_i reaches M = max_j (a_j - r_j)
(e_best >= e_j >= a_j - r_j for the j giving M, and a_best + r_best >= e_best). The candidates' float32 logits
are computed by ``fewrow.linear`` from their rows of the weight, the same numbers the full product gives
(fewrow's result for a weight row depends on that row and h only), and the first largest wins, as
``torch.argmax``: the token is the full product's, always, not most of the time. With led-base's shape and
random weights a step has a handful of candidates; a trained model's logits are more peaked.

Processors that only ban tokens (``-inf``: min_length, no_repeat_ngram_size, bad words, forced and
suppressed tokens) run on the int8 logits first: which tokens they ban depends on the tokens so far, not on
the scores, so a banned token is never a candidate. Anything else (penalties, sampling, returned scores)
needs every logit and keeps the full product; so do more than ``fewrow.MAX_ROWS`` rows, a head that is not a
plain float32 weight on the CPU, hidden states or weights that are not numbers, and machines without the
compiled kernels.

The int8 copy (plus two numbers per row) is built on first use and kept per weight tensor until the weight
changes (its version counter: an optimizer's in-place update rebuilds it). The int8 products, the copy and
the candidates are compiled loops (``greedy_head.c``, built with the other kernels: ``kernels.py``).
"""
from __future__ import annotations

import weakref
from typing import Callable, Dict, Optional, Tuple

import torch

from . import fewrow, kernels

_U = 2.0 ** -24  # float32's unit roundoff


class Int8Head:
    """The int8 copy of an LM head weight (N, K) and each row's error coefficient (see the module docstring):
    ``q`` (N, K) int8, ``scales`` (N,) float32 and ``coefficients`` (N,) float64, so that
    |e_i - a_i| <= ||h|| coefficients_i + 2^-20 (|a_i| + |b_i|)."""

    def __init__(self, weight: torch.Tensor, library):
        n, k = weight.shape
        weight = weight.detach().contiguous()
        self.q = torch.empty((n, k), dtype=torch.int8)
        self.scales = torch.empty(n, dtype=torch.float32)
        self.coefficients = torch.empty(n, dtype=torch.float64)
        library.greedy_head_quantize(weight.data_ptr(), n, k, k * _U / (1 - k * _U), self.q.data_ptr(),
                                     self.scales.data_ptr(), self.coefficients.data_ptr(), torch.get_num_threads())


# id(weight) -> (a weak reference to it, its version key, its Int8Head); an entry leaves with its weight.
_heads: Dict[int, Tuple[weakref.ref, tuple, Int8Head]] = {}
_off = kernels.OffSwitch()
disabled = _off.off  # inside ``with disabled():`` argmax returns None: the full product (in-run baselines)
calls = {"screened": 0, "candidates": 0}  # steps answered here, and the logits they computed in float32


def int8_head(weight: torch.Tensor, library) -> Int8Head:
    """The int8 copy of ``weight``, built once per weight version."""
    key = (weight._version, weight.data_ptr(), tuple(weight.shape))
    entry = _heads.get(id(weight))
    if entry is None or entry[0]() is not weight or entry[1] != key:
        ident = id(weight)
        entry = (weakref.ref(weight, lambda _: _heads.pop(ident, None)), key, Int8Head(weight, library))
        _heads[ident] = entry
    return entry[2]


def int8_logits(head: Int8Head, hidden: torch.Tensor, library) -> torch.Tensor:
    """``scales * (hidden @ q.T)``, (rows, N), for 1..8 contiguous float32 rows of hidden states: the int8
    logits without the bias (float32 sums in any order)."""
    rows, k = hidden.shape
    n = head.q.shape[0]
    out = hidden.new_empty((rows, n))
    with kernels.profiled(lambda: f"greedy_head::int8_products rows={rows} n={n} k={k}"):
        status = library.greedy_head_int8_products(head.q.data_ptr(), head.scales.data_ptr(), hidden.data_ptr(),
                                                   k, out.data_ptr(), n, n, k, rows, torch.get_num_threads())
    if status != 0:
        raise ValueError(f"the int8 products take 1-{fewrow.MAX_ROWS} rows, got {rows}")
    return out


def argmax(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           ban: Callable[[torch.Tensor], torch.Tensor]) -> Optional[torch.Tensor]:
    """The tokens (rows,) that ``ban(hidden @ weight.T + bias).argmax(-1)`` gives with ``fewrow.linear``'s
    float32 logits, where ``ban`` only sets scores to -inf (see the module docstring); None where this cannot
    answer (the caller computes every logit then)."""
    if (_off or torch.is_grad_enabled() or hidden.dim() != 2 or not 1 <= hidden.shape[0] <= fewrow.MAX_ROWS
            or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]
            or not kernels.usable(hidden, weight, *(() if bias is None else (bias,)))):
        return None
    library = kernels.library()
    if library is None:
        return None
    norms = hidden.double().norm(dim=1)
    if not bool(torch.isfinite(norms).all()):
        return None
    head = int8_head(weight, library)
    rows, n = hidden.shape[0], weight.shape[0]
    approximate = int8_logits(head, hidden, library)
    if bias is not None:
        approximate += bias
    processed = ban(approximate.clone()).contiguous()  # held by a name while the library reads it
    if processed.shape != approximate.shape or processed.dtype != approximate.dtype:
        return None
    ids = torch.empty((rows, n), dtype=torch.long)
    counts = torch.empty(rows, dtype=torch.long)
    with kernels.profiled(lambda: f"greedy_head::candidates rows={rows} n={n}"):
        status = library.greedy_head_candidates(approximate.data_ptr(), processed.data_ptr(),
                                                None if bias is None else bias.data_ptr(),
                                                head.coefficients.data_ptr(), norms.data_ptr(), rows, n,
                                                ids.data_ptr(), counts.data_ptr())
    if status != 0:
        return None  # a row with every token banned, or numbers that are not finite: the full product decides
    tokens = torch.empty(rows, dtype=torch.long)
    for row in range(rows):
        found = ids[row, :int(counts[row])]  # ascending token ids
        exact = fewrow.linear(hidden[row:row + 1], weight.index_select(0, found),
                              None if bias is None else bias.index_select(0, found))
        tokens[row] = found[exact[0].argmax()]  # the first largest, as torch.argmax over every logit
        calls["candidates"] += found.numel()
    calls["screened"] += 1
    return tokens
