#!/usr/bin/env python
"""``global_mask_for_pieces`` against the per-piece scan that defines it, on the same inputs.

The mask marks every BPE piece whose character range overlaps a global-attention span. Its definition scans
every span for every piece, O(pieces x spans); ``spacy_led.global_attention`` sorts the spans once and sweeps,
O((pieces + spans) log spans). tests/test_global_attention.py checks that the sweep reads the spans once and
gives the definition's mask; this script measures what that is worth.

Inputs: ``--pieces`` pieces of two characters separated by a space, a one-character span on every
``--every``-th piece (given in reverse order, unsorted). Printed, for each size: the best of ``--repeats``
runs of each (seconds) and the ratio baseline / sweep (> 1: the sweep is faster). The masks are compared.

Example (repository root; ~20 s on 2 shared cores)::

    PYTHONPATH=. python benchmarks/bench_global_mask.py
    PYTHONPATH=. python benchmarks/bench_global_mask.py --pieces 1024 4096 16384 --every 8
"""
from __future__ import annotations

import argparse
import time

from spacy_led.global_attention import GlobalAttention, global_mask_for_pieces


def per_piece_scan(spans, offsets):
    """The definition: a piece is global when any span overlaps it (a zero-width span marks the piece it is in)."""
    return [int(any((s < b and a < e) if a != b else (s <= a < e) for a, b in spans)) for s, e in offsets]


def best_time(function, repeats):
    times, result = [], None
    for _ in range(repeats):
        begin = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - begin)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--every", type=int, default=8, help="a span on every N-th piece")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'pieces':>7} {'spans':>6} {'per-piece scan s':>17} {'sweep s':>9} {'ratio':>8}")
    for n_pieces in args.pieces:
        offsets = [(3 * i, 3 * i + 2) for i in range(n_pieces)]
        spans = [(3 * i, 3 * i + 1) for i in range(n_pieces - args.every, -1, -args.every)]
        attention = GlobalAttention(char_spans=spans)
        special = [0] * n_pieces
        sweep_s, sweep = best_time(lambda: global_mask_for_pieces(attention, offsets, special), args.repeats)
        scan_s, scan = best_time(lambda: per_piece_scan(spans, offsets), args.repeats)
        if sweep != scan:
            raise SystemExit(f"the masks differ at {n_pieces} pieces")
        print(f"{n_pieces:>7} {len(spans):>6} {scan_s:>17.4f} {sweep_s:>9.4f} {scan_s / sweep_s:>8.1f}")


if __name__ == "__main__":
    main()
