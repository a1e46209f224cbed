#!/usr/bin/env python
"""How the encoder's time grows from 4,096 to 16,384 tokens, and how it compares with transformers at 16k.

The encoder does 4.0x the work at 16,384 tokens as at 4,096 (every part of it is linear in the length: the
window is fixed), so 4.0x the time is the ideal; more means something costs more per token at 16k (memory
traffic of large intermediates, fresh pages, cache misses). One process loads spacy-led's ``LEDModel`` (the
led-base shape with random weights, ``bench_modeling.py``'s model and inputs: batch 1, global attention on the
first token, fp32, ``torch.no_grad()``), runs one untimed forward at each length, then ``--repeats`` rounds
of one forward at each length (alternating which goes first), and prints the ratio of the medians (and of the
fastest runs: contention only ever slows a run down) in wall time and in process CPU time.

With ``--full`` transformers' encoder runs at 16,384 tokens in the same process after ours, timed the same way
(``--hf-repeats`` runs, no warm-up: each takes minutes), and the speed ratio and the outputs' agreement are
printed.

Run alone on a shared machine (``flock``); from the repository root::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_encoder16k.py            # ours: 16k / 4k
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_encoder16k.py --full     # + transformers at 16k
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import (  # noqa: E402  (the shared model, inputs and helpers)
    _encoder_call,
    _encoder_inputs,
    _load,
    _loadavg,
    _rel_diff,
    _setup_torch,
    run_child,
)

SHORT, LONG = 4096, 16384
SCALING_GOAL, SPEEDUP_GOAL = 4.4, 3.0  # issue 14's goals: 16k / 4k time, and speed over transformers at 16k


def _timed(impl, model, inputs):
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    out = _encoder_call(impl, model, inputs)
    return out, time.perf_counter() - start, time.process_time() - cpu_start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (one forward per length; default 3)")
    parser.add_argument("--full", action="store_true", help="also run transformers' encoder at 16,384 tokens")
    parser.add_argument("--hf-repeats", type=int, default=1, help="timed transformers runs with --full (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch = _setup_torch(args.threads)
    print(f"load average at start: {_loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_encoder16k_") as tmp:
        checkpoint = str(Path(tmp) / "led-base-random")
        made = run_child(dict(what="make_checkpoint", threads=args.threads, seed=args.seed, checkpoint=checkpoint),
                         None)
        if "error" in made:
            sys.exit(f"could not build the checkpoint: {made['error']}")
        inputs = {length: _encoder_inputs(length, args.seed) for length in (SHORT, LONG)}
        ours = _load("ours", "encoder", checkpoint)
        wall = {SHORT: [], LONG: []}
        cpu = {SHORT: [], LONG: []}
        outputs = {}
        with torch.no_grad():
            for length in (SHORT, LONG):  # warm-up
                _encoder_call("ours", ours, inputs[length])
            for rep in range(args.repeats):
                for length in ((SHORT, LONG) if rep % 2 == 0 else (LONG, SHORT)):
                    outputs[length], seconds, cpu_seconds = _timed("ours", ours, inputs[length])
                    wall[length].append(seconds)
                    cpu[length].append(cpu_seconds)
                    print(f"    ours {length}: {seconds:.2f} s (CPU {cpu_seconds:.2f} s)", file=sys.stderr, flush=True)
            hf_wall = []
            if args.full:
                del ours
                gc.collect()
                reference = _load("transformers", "encoder", checkpoint)
                for _ in range(args.hf_repeats):
                    expected, seconds, _ = _timed("transformers", reference, inputs[LONG])
                    hf_wall.append(seconds)
                    print(f"    transformers {LONG}: {seconds:.2f} s", file=sys.stderr, flush=True)

    med = {length: statistics.median(wall[length]) for length in wall}
    print(f"\nled-base encoder, fp32, {args.threads} threads, {args.repeats} rounds (load average after: {_loadavg()})")
    print(f"{'tokens':>8}{'median s':>10}{'best s':>10}{'median CPU s':>14}   (runs: wall s)")
    for length in (SHORT, LONG):
        runs = " ".join(f"{t:.2f}" for t in wall[length])
        print(f"{length:>8}{med[length]:>10.2f}{min(wall[length]):>10.2f}"
              f"{statistics.median(cpu[length]):>14.2f}   ({runs})")
    scaling = med[LONG] / med[SHORT]
    print(f"\n16k / 4k time (the work is 4.0x): median {scaling:.2f}x, "
          f"best {min(wall[LONG]) / min(wall[SHORT]):.2f}x, "
          f"CPU time {statistics.median(cpu[LONG]) / statistics.median(cpu[SHORT]):.2f}x")
    print(f"goal: 16k / 4k median wall time <= {SCALING_GOAL}x: {_verdict(scaling <= SCALING_GOAL)}")
    if hf_wall:
        hf = statistics.median(hf_wall)
        speedup = hf / med[LONG]
        print(f"transformers at 16k: {hf:.2f} s ({' '.join(f'{t:.2f}' for t in hf_wall)}); "
              f"speed-up of ours: {speedup:.2f}x (median of ours), {min(hf_wall) / min(wall[LONG]):.2f}x "
              f"(fastest of each); outputs' max relative difference {_rel_diff(outputs[LONG], expected):.1e}")
        print(f"goal: >= {SPEEDUP_GOAL}x transformers at 16k (median of ours): {_verdict(speedup >= SPEEDUP_GOAL)}")
    else:
        print(f"goal: >= {SPEEDUP_GOAL}x transformers at 16k: not measured (run with --full)")
    return 0


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
