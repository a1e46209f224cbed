#!/usr/bin/env python
"""``spacy-led apply`` against a plain one-document-at-a-time loop, and its memory over a long run.

Model: a small random LED (d_model 64, 2 + 2 layers, window 32, 1024 encoder positions; ``--d-model`` etc.)
written with spacy-led's own ``save_pretrained`` plus the tests' tiny BART-style tokenizer
(``tests/tokenizer_fixture.py``), or a real HuggingFace LED directory with ``--checkpoint``. Task:
``--task summarize`` (greedy, ``--summary-length`` tokens) or ``classify``.

Speed (same process, same pipeline object, same documents of mixed lengths: 1 to ``--max-sentences``
sentences each, seeded)
    baseline: ``[nlp(t) for t in texts]``
    apply:    ``spacy_led.apply.run_apply(...)`` on a JSONL file of the same texts -- the command line's engine, with
              its reading, length-grouped batching under the token budget, JSON writing and fsync per batch.
    Printed: documents/s and tokens/s (spaCy tokens) of each and the ratio apply / baseline (> 1: faster).
    One untimed warm-up document first; the best of ``--repeats`` runs of each, alternating.

Memory (``--memory-docs`` N documents, a separate ``python -m spacy_led apply`` process)
    The child's VmRSS (``/proc/PID/status``) is sampled every 20 ms while its output grows; printed: the peak
    RSS up to N/4, N/2, 3N/4 and N documents written, and the growth from N/4 to N (flat: a few MB at most).

Example (repository root; ~2 minutes on 2 shared cores)::

    PYTHONPATH=. python benchmarks/bench_cli.py
    PYTHONPATH=. python benchmarks/bench_cli.py --docs 64 --memory-docs 400 --batch-size 16
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SENTENCES = [
    "The court reviewed the contract in detail.",
    "Both parties agreed to the terms in 2019!",
    "Witnesses described the café meeting in Zürich.",
    "The quick brown fox jumps over the lazy dog.",
    "Longformer encoder-decoder models summarize long documents with sparse attention.",
    "The judge asked who signed first, and nobody answered at once.",
    "Later the clerk read the record aloud.",
    "Hello, how are you? I'm fine, thanks.",
]


def make_checkpoint(path: Path, args) -> Path:
    import torch

    from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, LEDForSequenceClassification
    from tokenizer_fixture import make_tokenizer_dir

    torch.manual_seed(0)
    shape = dict(vocab_size=500, d_model=args.d_model, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=4 * args.d_model, decoder_ffn_dim=4 * args.d_model,
                 attention_window=32, max_encoder_position_embeddings=1024, max_decoder_position_embeddings=64,
                 init_std=0.3)
    if args.task == "classify":
        model = LEDForSequenceClassification(LEDConfig(**shape, id2label={0: "a", 1: "b", 2: "c"}))
    else:
        model = LEDForConditionalGeneration(LEDConfig(**shape))
    model.eval().save_pretrained(path)
    make_tokenizer_dir(path, vocab_size=500)
    return path


def make_texts(n: int, max_sentences: int, seed: int):
    rng = random.Random(seed)
    return [" ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, max_sentences))) + f" Number {i}."
            for i in range(n)]


def component_config(args):
    return {"num_beams": 1, "max_summary_length": args.summary_length} if args.task == "summarize" else {}


def bench_speed(args, checkpoint: Path, work: Path) -> None:
    import torch

    from spacy_led.apply import ApplyOptions, load_pipeline, run_apply

    torch.set_num_threads(args.threads)
    nlp = load_pipeline(ApplyOptions("", "", checkpoint=str(checkpoint), task=args.task,
                                     component_config=component_config(args)))
    texts = make_texts(args.docs, args.max_sentences, 1)
    src = work / "speed.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf8")
    n_tokens = sum(len(nlp.make_doc(t)) for t in texts)
    nlp("Warm up.")

    def baseline():
        start = time.perf_counter()
        _ = [nlp(t) for t in texts]
        return time.perf_counter() - start

    def command(i):
        out = work / f"speed_out{i}.jsonl"
        start = time.perf_counter()
        options = ApplyOptions(str(src), str(out), checkpoint=str(checkpoint), task=args.task,
                               batch_size=args.batch_size, batch_token_budget=args.batch_token_budget,
                               progress=False)
        result = run_apply(options, nlp=nlp)
        elapsed = time.perf_counter() - start
        assert result.done == len(texts) and result.failed == 0, result.summary()
        return elapsed

    base, cmd = [], []
    for i in range(args.repeats):
        if i % 2 == 0:
            base.append(baseline()); cmd.append(command(i))
        else:
            cmd.append(command(i)); base.append(baseline())
    b, c = min(base), min(cmd)
    print(f"speed: {len(texts)} documents, {n_tokens} spaCy tokens (1-{args.max_sentences} sentences each), "
          f"task {args.task}, batch size {args.batch_size}, token budget {args.batch_token_budget}, "
          f"{args.threads} torch thread(s), best of {args.repeats}")
    print(f"  one-by-one loop : {len(texts) / b:8.1f} docs/s {n_tokens / b:9.0f} tokens/s ({b:.2f}s)")
    print(f"  spacy-led apply : {len(texts) / c:8.1f} docs/s {n_tokens / c:9.0f} tokens/s ({c:.2f}s)")
    print(f"  ratio apply / loop: {b / c:.2f}x")


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_memory(args, checkpoint: Path, work: Path) -> None:
    n = args.memory_docs
    texts = make_texts(n, args.max_sentences, 2)
    src = work / "memory.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf8")
    out = work / "memory_out.jsonl"
    command = [sys.executable, "-m", "spacy_led", "apply", "--checkpoint", str(checkpoint), "--task", args.task,
               "--component-config", json.dumps(component_config(args)), "--batch-size", str(args.batch_size),
               "--batch-token-budget", str(args.batch_token_budget), "--no-progress", str(src), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marks = [n // 4, n // 2, 3 * n // 4, n]
    peaks = {}
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_kb(proc.pid))
        written = out.read_bytes().count(b"\n") if out.exists() else 0
        for mark in marks:
            if written >= mark and mark not in peaks:
                peaks[mark] = peak
        time.sleep(0.02)
    stderr = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"the command failed ({proc.returncode}):\n{stderr}")
    for mark in marks:
        peaks.setdefault(mark, peak)
    elapsed = time.perf_counter() - start
    print(f"memory: {n} documents through `python -m spacy_led apply` ({elapsed:.1f}s), peak RSS so far:")
    for mark in marks:
        print(f"  after {mark:6d} docs: {peaks[mark] / 1024:8.1f} MB")
    growth = (peaks[n] - peaks[marks[0]]) / 1024
    print(f"  growth N/4 -> N: {growth:+.1f} MB ({'flat' if abs(growth) < 20 else 'GROWING'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["summarize", "classify"], default="summarize")
    parser.add_argument("--checkpoint", help="a HuggingFace LED directory (default: a small random one)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--max-sentences", type=int, default=40)
    parser.add_argument("--summary-length", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-token-budget", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-docs", type=int, default=800)
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(work / "checkpoint", args)
        bench_speed(args, checkpoint, work)
        if not args.no_memory:
            bench_memory(args, checkpoint, work)


if __name__ == "__main__":
    main()
