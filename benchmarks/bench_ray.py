#!/usr/bin/env python
"""``spacy-led apply`` executors on one corpus: documents/s, and the driver's peak memory as the corpus grows.

Corpus: ``--docs`` N JSONL records of a few short sentences (seeded), each carrying a ``meta`` field of
``--meta-kb`` KB that the pipeline ignores -- so the input file is large (N x ~meta-kb KB: hundreds of MB at
10 N) while the model work per document stays small enough for a 2-core machine. Model: the small random LED
of ``bench_cli.py`` (classification, one torch thread per process).

Each run is a separate ``python -m spacy_led apply`` process (the *driver*); its peak RSS is the kernel's
``ru_maxrss`` of that process (``os.wait4``), which does not include Ray's worker processes. Runs:

    local      N documents, in-process
    n_process  N documents, --n-process 2
    ray        N documents, --ray on a local 2-CPU cluster started here, 2 workers
    ray 10N    10 N documents, same cluster
    (--local-10n adds local at 10 N)

Printed: wall time of the whole command (pipeline loading and Ray start-up included) and its documents/s,
the documents/s the command reports itself (from the start of processing: after loading the pipeline locally,
including the start of the workers with Ray), the driver's peak RSS, and the ray driver's RSS growth from N to 10 N (the goal: under 100 MB), and the ratio of
each executor's documents/s to the in-process one.

Example (repository root)::

    PYTHONPATH=. python benchmarks/bench_ray.py --docs 2000 --meta-kb 15
    PYTHONPATH=. python benchmarks/bench_ray.py --docs 200 --meta-kb 2      # a quick smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_cli import SENTENCES, make_checkpoint  # noqa: E402


def write_corpus(path: Path, n: int, meta_kb: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    pad = "x" * (meta_kb * 1024)
    with open(path, "w", encoding="utf8") as f:
        for i in range(n):
            text = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 3))) + f" Number {i}."
            f.write(json.dumps({"id": i, "text": text, "meta": pad}) + "\n")
    return path.stat().st_size


def run_driver(command, env):
    """(seconds, peak RSS in MB, stderr) of one driver process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024, stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000, help="N")
    parser.add_argument("--meta-kb", type=int, default=15, help="size of each record's ignored metadata field")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--part-size", type=int, default=500)
    parser.add_argument("--local-10n", action="store_true", help="also run the in-process executor at 10 N")
    args = parser.parse_args()
    import ray

    bench_args = argparse.Namespace(d_model=64, task="classify")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = make_checkpoint(work / "checkpoint", bench_args)
        small, large = work / "n.jsonl", work / "10n.jsonl"
        sizes = {small: write_corpus(small, args.docs, args.meta_kb), large: write_corpus(large, 10 * args.docs, args.meta_kb)}
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")  # a loaded machine starts Ray slowly
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        address = ray.get_runtime_context().gcs_address
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        base = [sys.executable, "-m", "spacy_led", "apply", "--checkpoint", str(checkpoint), "--task", "classify",
                "--no-progress", "--batch-size", str(args.batch_size)]
        runs = [("local", small, []), ("n_process=2", small, ["--n-process", "2"]),
                ("ray, 2 workers", small, ["--ray", address, "--n-process", "2", "--part-size", str(args.part_size)]),
                ("ray, 2 workers", large, ["--ray", address, "--n-process", "2", "--part-size", str(args.part_size)])]
        if args.local_10n:
            runs.append(("local", large, []))
        print(f"corpus: N = {args.docs} documents ({sizes[small] / 2**20:.0f} MB), 10 N = {10 * args.docs} "
              f"({sizes[large] / 2**20:.0f} MB); records carry {args.meta_kb} KB of ignored metadata; "
              f"tiny random LED classifier, 1 torch thread per process, batch size {args.batch_size}")
        print(f"{'executor':16s} {'docs':>7s} {'seconds':>8s} {'docs/s':>8s} {'docs/s in run':>14s} "
              f"{'driver peak RSS':>16s}")
        results = {}
        try:
            for i, (name, corpus, extra) in enumerate(runs):
                n = args.docs if corpus == small else 10 * args.docs
                out = work / f"out{i}" / ("parts" if "--ray" in extra else "out.jsonl")
                out.parent.mkdir()
                seconds, rss, stderr = run_driver([*base, *extra, str(corpus), str(out)], env)
                assert f"{n} documents done" in stderr, stderr
                results[(name, n)] = (seconds, rss)
                in_run = float(re.search(r"\(([\d.]+) docs/s", stderr).group(1))
                print(f"{name:16s} {n:7d} {seconds:8.1f} {n / seconds:8.1f} {in_run:14.1f} {rss:13.0f} MB", flush=True)
        finally:
            ray.shutdown()
        local_rate = args.docs / results[("local", args.docs)][0]
        for name in ("n_process=2", "ray, 2 workers"):
            print(f"docs/s {name} / local at N: {args.docs / results[(name, args.docs)][0] / local_rate:.2f}x")
        growth = results[("ray, 2 workers", 10 * args.docs)][1] - results[("ray, 2 workers", args.docs)][1]
        print(f"ray driver peak RSS growth N -> 10 N: {growth:+.0f} MB ({'under' if growth < 100 else 'OVER'} 100 MB)")


if __name__ == "__main__":
    main()
