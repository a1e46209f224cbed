#!/usr/bin/env python
"""The encoder's sliding-window attention: the compiled band kernel (``band_attention.c``) against the blocked
``scaled_dot_product_attention`` path it replaces in float32 CPU inference, in the same run.

1. The local attention of one layer alone, led-base's shape (12 heads of 64, window 1024, so w = 512), batch 1,
   global attention on the first token, random projections: ``band_attention.local_attention`` against
   ``LEDEncoderSelfAttention._local_attention`` under ``kernels.disabled()`` (the SDPA path). The useful work
   is each query's band, 4 x L x H x (2w + 2) x D FLOP (scores and values); the SDPA path multiplies 1.5x that.
2. The whole led-base encoder (random weights, ``bench_modeling.py``'s shape and inputs) with the kernel and
   under ``kernels.disabled()``.

Each is warmed up once, then timed ``--repeats`` rounds alternating which goes first; the medians' ratio
(SDPA / kernel, > 1: the kernel is faster), the fastest runs' ratio and the outputs' max relative difference
are printed. Absolute times drift on a shared machine; compare the ratios. From the repository root::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_encoder_attention.py
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_encoder_attention.py --lengths 4096 16384 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import LED_BASE_SHAPE, _encoder_inputs, _loadavg, _rel_diff, _setup_torch  # noqa: E402


def _time_pair(torch, runs, repeats):
    """{name: [seconds]} and the last outputs, for two callables timed alternately after a warm-up each."""
    times = {name: [] for name in runs}
    outputs = {name: run() for name, run in runs.items()}
    names = list(runs)
    for rep in range(repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            outputs[name] = runs[name]()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def _report(label, times, outputs, flop=None):
    kernel, sdpa = statistics.median(times["kernel"]), statistics.median(times["sdpa"])
    rate = f" | {flop / kernel / 1e9:.0f} | {flop / sdpa / 1e9:.0f}" if flop else " | - | -"
    print(f"| {label} | {kernel:.3f} s | {sdpa:.3f} s | **{sdpa / kernel:.2f}x** | "
          f"{min(times['sdpa']) / min(times['kernel']):.2f}x{rate} | "
          f"{_rel_diff(outputs['kernel'], outputs['sdpa']):.1e} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-encoder", action="store_true", help="only the attention of one layer")
    args = parser.parse_args()
    torch = _setup_torch(args.threads)
    from spacy_led.modeling import band_attention, kernels
    from spacy_led.modeling.attention import EncoderMaskLayout, LEDEncoderSelfAttention
    from spacy_led.modeling.config import LEDConfig
    from spacy_led.modeling.model import LEDModel

    if kernels.library() is None:
        sys.exit("the compiled kernels are not available on this machine (see spacy_led/modeling/kernels.py)")
    heads, d_model = LED_BASE_SHAPE["encoder_attention_heads"], LED_BASE_SHAPE["d_model"]
    window = LED_BASE_SHAPE["attention_window"]
    head_dim, one_sided = d_model // heads, window // 2
    print(f"threads {args.threads}, load average {_loadavg()}, torch {torch.__version__}; "
          f"{heads} heads x {head_dim}, window {window}")
    print("\n| case | band kernel | blocked SDPA | speed-up (medians) | speed-up (fastest) | kernel GFLOP/s "
          "(useful) | SDPA GFLOP/s (useful) | max rel. difference |")
    print("|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(args.seed)
    module = LEDEncoderSelfAttention(d_model, heads, window, 0.0).eval()
    with torch.no_grad():
        for length in args.lengths:
            q, k, v = (torch.randn(1, length, heads, head_dim, generator=generator) for _ in range(3))
            glob = torch.zeros(1, length, dtype=torch.long)
            glob[0, 0] = 1
            layout = EncoderMaskLayout.build(torch.ones(1, length, dtype=torch.long), glob)

            def sdpa():
                with kernels.disabled():
                    return module._local_attention(q, k, v, layout, 0.0)

            runs = {"kernel": lambda: band_attention.local_attention(q, k, v, layout, one_sided), "sdpa": sdpa}
            times, outputs = _time_pair(torch, runs, args.repeats)
            rows = ~(layout.is_pad | layout.is_global)[0]  # the caller overwrites the global rows
            outputs = {name: out[0, rows] for name, out in outputs.items()}
            flop = 4 * length * heads * (2 * one_sided + 2) * head_dim
            _report(f"one layer's local attention, {length} tokens", times, outputs, flop)

        if not args.no_encoder:
            config = LEDConfig(**LED_BASE_SHAPE)
            torch.manual_seed(args.seed)
            encoder = LEDModel(config).eval().encoder
            for length in args.lengths:
                ids, mask, glob = _encoder_inputs(length, args.seed)

                def forward():
                    return encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob)[0]

                def forward_sdpa():
                    with kernels.disabled():
                        return forward()

                times, outputs = _time_pair(torch, {"kernel": forward, "sdpa": forward_sdpa}, args.repeats)
                _report(f"led-base encoder, {length} tokens", times, outputs)
    print(f"load average {_loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
