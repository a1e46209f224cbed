#!/usr/bin/env python
"""One training step of led-base at 16,384 input tokens: spacy-led's LED against transformers' LED.

The step is what fine-tuning a summarizer on long documents does: forward with ``labels`` (a 256-token
summary), ``loss.backward()``, with gradient checkpointing on (``gradient_checkpointing_enable()`` in both
libraries) and the model in ``train()`` mode. Dropout is set to 0 so that both compute the same function and
their losses and gradients can be compared (dropout changes neither the memory nor the time in any way that
differs between the two).

Model: led-base-16384's shape (``bench_modeling.LED_BASE_SHAPE``) with random weights, written once by
transformers' ``save_pretrained`` and loaded by each library's own ``from_pretrained``; float32, batch 1,
global attention on the first token, random ids and labels.

Each implementation runs in its own fresh subprocess, so its peak memory is its own:

* ``peak RSS``: the process's peak resident memory (``VmHWM``) over the whole run, model included.
* ``step extra``: the peak during the first step over the resident memory just before it (the peak counter
  is reset through ``/proc/self/clear_refs`` after loading, as in bench_modeling.py); this is the memory the
  step itself needs: activations, their recomputation, and the gradients (as large as the weights).

Time: wall seconds of each step (``--steps``, the first included: a real fine-tuning step is never warm in
any other sense); the ratio is transformers' / ours (> 1: ours is faster), taken on the fastest step of each.
Agreement: the losses, and every parameter's gradient as ``max|ours - transformers| / max|transformers|``
(the largest over all parameters is printed, and the parameter it belongs to), compared in the parent from
the gradients each child saved with safetensors.

transformers at 16,384 tokens needs several GB and minutes; run this alone (``flock`` on a shared machine)::

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_train16k.py                # 16,384 tokens, 256 labels
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_train16k.py --length 2048  # smoke test
"""
from __future__ import annotations

import argparse
import json
import resource
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import (  # noqa: E402  (the shared model shape and /proc helpers)
    LED_BASE_SHAPE,
    REPO_ROOT,
    _loadavg,
    _malloc_trim,
    _reset_peak_rss,
    _setup_torch,
    _status_kb,
)

IMPLS = ("ours", "transformers")
# issue 14's goals for the step: at most half transformers' peak memory, at least 1.5x its speed, gradients
# within the parity tolerance (tests/test_gradient_parity.py's).
MEMORY_GOAL, SPEED_GOAL, GRADIENT_TOLERANCE = 0.5, 1.5, 1e-4
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def child_make_checkpoint(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    import transformers

    torch.manual_seed(spec["seed"])
    model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**{**LED_BASE_SHAPE, **NO_DROPOUT}))
    with torch.no_grad():  # a non-zero bias makes the logits' comparison meaningful
        model.final_logits_bias.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(spec["seed"]))
    model.save_pretrained(spec["checkpoint"])
    return {"parameters": sum(p.numel() for p in model.parameters())}


def _inputs(length: int, target_length: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    vocab = LED_BASE_SHAPE["vocab_size"]
    ids = torch.randint(3, vocab, (1, length), generator=gen)
    ids[0, 0], ids[0, -1] = LED_BASE_SHAPE["bos_token_id"], LED_BASE_SHAPE["eos_token_id"]
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    labels = torch.randint(3, vocab, (1, target_length), generator=gen)
    labels[0, -1] = LED_BASE_SHAPE["eos_token_id"]
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=global_mask, labels=labels)


def child_step(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    from safetensors.torch import save_file

    if spec["impl"] == "ours":
        from spacy_led.modeling import LEDForConditionalGeneration
    else:
        from transformers import LEDForConditionalGeneration
    model = LEDForConditionalGeneration.from_pretrained(spec["checkpoint"], dtype=torch.float32)
    model.train()
    model.gradient_checkpointing_enable()
    if spec["impl"] == "transformers":
        model.config.use_cache = False  # what transformers asks for with checkpointing
    inputs = _inputs(spec["length"], spec["target_length"], spec["seed"])
    with torch.no_grad():  # fault in every weight page before the peak is reset
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.sum()
    _malloc_trim()
    reset = _reset_peak_rss()
    before_kb = _status_kb("VmRSS")
    times, losses, step_extra_kb = [], [], None
    for step in range(spec["steps"]):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
        if step == 0:
            step_extra_kb = _status_kb("VmHWM") - before_kb
        print(f"    {spec['impl']} step {step + 1}/{spec['steps']}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    peak_kb = _status_kb("VmHWM") if reset else None

    grads = {name: p.grad.contiguous() for name, p in model.named_parameters() if p.grad is not None}
    save_file(grads, spec["grads"])
    return {
        "times": times,
        "losses": losses,
        "step_extra_mib": step_extra_kb / 1024,
        "before_step_mib": before_kb / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_after_reset_mib": None if peak_kb is None else peak_kb / 1024,
        "peak_reset": reset,
        "loadavg_after": _loadavg(),
    }


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


CHILDREN = {"make_checkpoint": child_make_checkpoint, "step": child_step}


def run_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"{spec['what']} {spec.get('impl', '')} exited with status {proc.returncode} and no result"
                     + (" (killed: out of memory?)" if proc.returncode in (-9, 137) else ""))


def compare_gradients(ours_path: str, reference_path: str):
    """(largest relative difference, its parameter, parameters compared, names in one set only).

    Each gradient's difference is taken relative to the larger of its own largest value and 1% of the model's
    largest gradient, as in tests/test_gradient_parity.py: gradients that are zero up to rounding noise (a key
    bias, which cancels in the softmax) are compared at that scale instead of their own."""
    from safetensors import safe_open

    with safe_open(ours_path, "pt") as ours, safe_open(reference_path, "pt") as reference:
        only = sorted(set(ours.keys()) ^ set(reference.keys()))
        names = sorted(set(ours.keys()) & set(reference.keys()))
        floor = 1e-2 * max(float(reference.get_tensor(name).abs().max()) for name in names)
        worst, worst_name = 0.0, None
        for name in names:
            ref = reference.get_tensor(name)
            diff = float((ours.get_tensor(name) - ref).abs().max() / ref.abs().max().clamp_min(floor))
            if diff >= worst:
                worst, worst_name = diff, name
    return worst, worst_name, len(names), only


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=16384, help="input tokens (default 16384)")
    parser.add_argument("--target-length", type=int, default=256, help="summary (label) tokens (default 256)")
    parser.add_argument("--steps", type=int, default=1, help="training steps per implementation (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each process (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=IMPLS, help="run one implementation (no ratios)")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        spec = json.loads(args._child)
        print("RESULT " + json.dumps(CHILDREN[spec["what"]](spec)), flush=True)
        return 0

    impls = [args.only] if args.only else list(IMPLS)
    base = dict(threads=args.threads, seed=args.seed)
    print(f"load average at start: {_loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_train16k_") as tmp:
        checkpoint = str(Path(tmp) / "led-base-random")
        made = run_child(dict(base, what="make_checkpoint", checkpoint=checkpoint))
        results = {}
        for impl in impls:
            print(f"{impl}: one process, {args.steps} step(s) at {args.length} + {args.target_length} tokens ...",
                  flush=True)
            results[impl] = run_child(dict(base, what="step", impl=impl, checkpoint=checkpoint, length=args.length,
                                           target_length=args.target_length, steps=args.steps,
                                           grads=str(Path(tmp) / f"{impl}.safetensors")))
        print(f"\nled-base shape ({made['parameters'] / 1e6:.0f} M parameters), {args.length} input tokens, "
              f"{args.target_length} labels, gradient checkpointing, fp32, {args.threads} threads")
        print(f"{'':14}{'step s (each)':>22}{'loss':>14}{'step extra MiB':>16}{'peak RSS MiB':>14}{'load after':>18}")
        for impl, r in results.items():
            steps = " ".join(f"{t:.1f}" for t in r["times"])
            print(f"{impl:14}{steps:>22}{r['losses'][0]:>14.6f}{r['step_extra_mib']:>16.0f}"
                  f"{r['peak_rss_mib']:>14.0f}{r['loadavg_after']:>18}")
        if len(results) == 2:
            ours, ref = results["ours"], results["transformers"]
            worst, name, compared, only = compare_gradients(str(Path(tmp) / "ours.safetensors"),
                                                            str(Path(tmp) / "transformers.safetensors"))
            speed = min(ref["times"]) / min(ours["times"])
            step_memory = ours["step_extra_mib"] / ref["step_extra_mib"]
            peak = ours["peak_rss_mib"] / ref["peak_rss_mib"]
            print(f"\nspeed (transformers / ours, fastest step): {speed:.2f}x"
                  f"   goal >= {SPEED_GOAL}x: {_verdict(speed >= SPEED_GOAL)}")
            print(f"step extra memory (ours / transformers):    {step_memory:.2f}x"
                  f"   goal <= {MEMORY_GOAL}x: {_verdict(step_memory <= MEMORY_GOAL)}")
            print(f"peak RSS (ours / transformers):             {peak:.2f}x"
                  f"   goal <= {MEMORY_GOAL}x: {_verdict(peak <= MEMORY_GOAL)}")
            print(f"loss difference: {abs(ours['losses'][0] - ref['losses'][0]):.2e} "
                  f"(relative {abs(ours['losses'][0] - ref['losses'][0]) / abs(ref['losses'][0]):.2e})"
                  f"   goal identical: {_verdict(ours['losses'][0] == ref['losses'][0])}")
            print(f"gradients: {compared} parameters compared, largest difference {worst:.2e} ({name}; relative to max(its largest value, 1% of the largest gradient))"
                  + (f"; in one set only: {only}" if only else "")
                  + f"   goal <= {GRADIENT_TOLERANCE:.0e}: {_verdict(worst <= GRADIENT_TOLERANCE and not only)}")
    print(f"load average at end: {_loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
