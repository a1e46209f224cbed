#!/usr/bin/env python
"""``spacy-led train-distributed`` throughput: 1 Ray Train worker against N, in the same run.

The same config runs twice on one local Ray cluster (``ray.init(num_cpus=N)``), once with 1 worker (the
baseline) and once with N, with the same global batch (``--batch-size`` examples per optimizer step), the
same seed and the same steps. Each worker gets 1 CPU and one torch thread (Ray sets OMP_NUM_THREADS to the
worker's CPUs), so the baseline computes on one core and the N-worker run on N.

Printed for each: examples/s inside the training loop (rank 0's clock from its first step to its last: the
compute and the gradient exchange, without Ray's start-up), the wall time of the whole ``train_distributed``
call (preparing the start, starting the worker group, training, writing the checkpoint and pipeline), the last
loss (equal up to float rounding: the runs compute the same steps), and the ratios N / 1 (> 1: faster).

Model: a fresh LED of the project's tiny shape (d_model 128, 1 + 2 layers, window 64) with a BPE learnt from
the bundled sample (``project/sample/train.jsonl``, or ``--corpus``), gradient checkpointing on.

Example (repository root; a few minutes on 2 shared cores)::

    python benchmarks/bench_distributed.py                     # 1 vs 2 workers, 20 steps of 8
    python benchmarks/bench_distributed.py --workers 4 --steps 40 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config_sections(corpus: Path, output: Path, args) -> dict:
    return {
        "task": {"name": "summarize"},
        "model": {"checkpoint": None, "gradient_checkpointing": True, "vocab_size": 2000,
                  "shape": {"d_model": args.d_model, "encoder_layers": 1, "decoder_layers": 2, "attention_heads": 4,
                            "ffn_dim": 2 * args.d_model, "attention_window": 64,
                            "max_encoder_position_embeddings": 1024, "max_decoder_position_embeddings": 128,
                            "dropout": 0.0}},
        "component": {"max_length": 1024},
        "corpora": {"train": {"@readers": "spacy_led.SummaryCorpus.v1", "path": str(corpus)}},
        "training": {"seed": 0, "batch_size": args.batch_size, "accumulation_steps": 1, "learning_rate": 1e-3,
                     "max_steps": args.steps, "checkpoint_every": args.steps, "max_failures": 0,
                     "find_unused_parameters": args.find_unused_parameters},
        "output": {"dir": str(output)},
    }


def run(workers: int, corpus: Path, tmp: Path, args) -> dict:
    from spacy_led.training import train_distributed
    from spacy_led.training.config import config_from_sections

    config = config_from_sections(config_sections(corpus, tmp / f"workers-{workers}", args))
    started = time.perf_counter()
    result = train_distributed(config, workers)
    wall = time.perf_counter() - started
    return {"workers": workers, "examples_per_second": result.metrics["examples_per_second"], "wall_s": wall,
            "loss": result.metrics["loss"], "steps": result.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="workers of the scaled run (default: 2)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch: examples per optimizer step")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--corpus", type=Path, default=ROOT / "project" / "sample" / "train.jsonl")
    parser.add_argument("--find-unused-parameters", action="store_true",
                        help="DDP's find_unused_parameters (needed while some parameter gets no gradient)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = run(1, args.corpus, Path(tmp), args)
            scaled = run(args.workers, args.corpus, Path(tmp), args)
    finally:
        ray.shutdown()

    print(f"{'workers':>8} {'examples/s (loop)':>18} {'wall s (whole call)':>20} {'last loss':>10}")
    for r in (baseline, scaled):
        print(f"{r['workers']:>8} {r['examples_per_second']:>18.2f} {r['wall_s']:>20.1f} {r['loss']:>10.5f}")
    speedup = scaled["examples_per_second"] / baseline["examples_per_second"]
    wall_ratio = baseline["wall_s"] / scaled["wall_s"]
    print(f"ratio {args.workers} / 1 workers: loop throughput {speedup:.2f}x, whole call {wall_ratio:.2f}x faster; "
          f"loss difference {abs(scaled['loss'] - baseline['loss']):.2e}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "scaled": scaled, "loop_speedup": speedup,
                                         "wall_speedup": wall_ratio}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
