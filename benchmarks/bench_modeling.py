#!/usr/bin/env python
"""spacy-led's LED against transformers' LED: encoder forward and beam-search ``generate`` on the CPU.

Both implementations run on the same machine in the same invocation, and the script prints *ratios*:
absolute times drift on a shared machine, ratios measured side by side much less.

Model
    led-base-16384's shape (vocab 50265, d_model 768, 6 + 6 layers, 12 heads, ffn 3072, attention window
    1024 in every layer, 16384 encoder / 1024 decoder positions) with random weights: transformers'
    ``LEDForConditionalGeneration`` is built from ``LEDConfig(...)`` under a fixed seed and written once with
    ``save_pretrained`` to a temporary directory; every measurement loads that directory with each library's
    own ``from_pretrained`` (``LEDModel`` for the encoder, ``LEDForConditionalGeneration`` for ``generate``).
    float32, ``eval()``, ``torch.no_grad()``, ``torch.set_num_threads(--threads)``, batch 1, global attention
    on the first token, random token ids.

Encoder forward (per length in ``--lengths``)
    Time: one process loads both models, runs ``--warmup`` untimed forwards of each, then ``--repeats`` timed
    forwards, alternating which implementation goes first, and reports the median of each. The speed ratio
    is transformers' median / ours (> 1: ours is faster). The outputs of the two are compared as
    ``max|ours - transformers| / max|transformers|`` (must stay within 1e-4).

Generate (``--gen-length`` input tokens, ``--gen-beams`` beams, ``--gen-new-tokens`` new tokens)
    ``max_new_tokens=N`` and ``min_length=N + 1`` (which counts the decoder start token) are set for both, so
    ``</s>`` is banned throughout and each run really generates N tokens. Timed the same
    way (median of ``--gen-repeats`` runs after ``--gen-warmup``), and the generated ids are compared.

Memory: the extra peak resident memory of ONE call
    Each (implementation, case) is measured in its own fresh subprocess, so nothing that ran before (a
    warm-up, the other library, another length) can have raised or pre-paid the number:

    1. load the model, build the inputs, read every parameter once (so lazily mapped weights are resident),
       ``gc.collect()`` and glibc ``malloc_trim(0)`` (so freed loading buffers are returned to the OS rather
       than silently reused by the forward pass);
    2. reset the kernel's peak-RSS counter by writing "5" to ``/proc/self/clear_refs`` (this sets ``VmHWM``
       to the current ``VmRSS``), and read ``VmRSS`` from ``/proc/self/status`` ("before");
    3. run one forward / generate call (the first and only one: no warm-up), keep its output alive;
    4. read ``VmHWM`` (the peak RSS since the reset): extra = ``VmHWM - before``.

    If ``/proc/self/clear_refs`` cannot be written, the peak cannot be reset; the process has then done
    nothing but load, and the number is ``VmHWM - before`` with the loading peak included in ``VmHWM``,
    which can hide part of the forward's peak: the table marks it "(no reset: lower bound)". The ratio is
    ours / transformers (< 1: ours uses less).

Noise
    Every timing process records its CPU seconds per wall second (``threads`` = all threads busy; less =
    waiting, or CPU taken by other processes) and the load average; both are printed. On a shared machine
    compare the "best" columns too (fastest run of each: contention only ever slows a run down). With two
    threads on an oversubscribed machine tiny operations (the decoder steps of ``generate``) can become ~5x
    slower than with one thread, so ``generate`` ratios are the noisiest numbers here.

transformers at 16384 tokens takes minutes and several GB, so transformers runs only at lengths up to
``--hf-max-length`` (default 4096) unless ``--full`` is given; the output says which runs were skipped.

Examples (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_modeling.py --quick            # smoke test, ~1 minute idle
    PYTHONPATH=. python benchmarks/bench_modeling.py                    # default, 7-15 minutes (*)
    PYTHONPATH=. python benchmarks/bench_modeling.py --full --lengths 16384 --repeats 1 --warmup 0 --no-generate
    PYTHONPATH=. python benchmarks/bench_modeling.py --json results.json
    PYTHONPATH=. python benchmarks/bench_modeling.py --show results.json   # print a saved run again

(*) on 2 cores of an AMD EPYC shared with other jobs; the default runs the encoder at 1024 / 4096 (both) and
16384 (ours only) tokens and generate from 4096 tokens.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent

LED_BASE_SHAPE: Dict[str, Any] = dict(
    vocab_size=50265,
    d_model=768,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=12,
    decoder_attention_heads=12,
    encoder_ffn_dim=3072,
    decoder_ffn_dim=3072,
    attention_window=1024,
    max_encoder_position_embeddings=16384,
    max_decoder_position_embeddings=1024,
    # Inference settings; dropout is off in eval() anyway.
    dropout=0.1,
    attention_dropout=0.0,
    activation_dropout=0.0,
    activation_function="gelu",
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    decoder_start_token_id=2,
)

TOLERANCE = 1e-4
IMPLS = ("ours", "transformers")


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by parent and children
# ---------------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def machine_facts(threads: int) -> Dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import transformers

        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "torch": torch.__version__,
        "transformers": hf_version,
        "python": platform.python_version(),
        "threads": threads,
        "peak_reset_via_clear_refs": _reset_peak_rss(),
    }


def _setup_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    import warnings

    warnings.filterwarnings("ignore")
    return torch


def _encoder_inputs(length: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed + length)
    ids = torch.randint(3, LED_BASE_SHAPE["vocab_size"], (1, length), generator=gen)
    ids[0, 0] = LED_BASE_SHAPE["bos_token_id"]
    ids[0, -1] = LED_BASE_SHAPE["eos_token_id"]
    attention_mask = torch.ones_like(ids)
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    return ids, attention_mask, global_mask


def _load(impl: str, kind: str, checkpoint: str):
    """kind: 'encoder' (LEDModel) or 'generate' (LEDForConditionalGeneration)."""
    import torch

    if impl == "ours":
        from spacy_led import modeling

        cls = modeling.LEDModel if kind == "encoder" else modeling.LEDForConditionalGeneration
        model = cls.from_pretrained(checkpoint, dtype=torch.float32)
    else:
        import transformers

        cls = transformers.LEDModel if kind == "encoder" else transformers.LEDForConditionalGeneration
        model = cls.from_pretrained(checkpoint, dtype=torch.float32)
    model.eval()
    with torch.no_grad():  # fault in every weight page (a no-op for weights already in anonymous memory)
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.sum()
    return model


def _encoder_call(impl: str, model, inputs):
    ids, attention_mask, global_mask = inputs
    encoder = model.get_encoder() if impl == "transformers" else model.encoder
    return encoder(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask).last_hidden_state


class GenerateUnavailable(Exception):
    pass


def _generate_call(impl: str, model, inputs, beams: int, new_tokens: int):
    ids, attention_mask, global_mask = inputs
    common = dict(
        attention_mask=attention_mask,
        global_attention_mask=global_mask,
        num_beams=beams,
        max_new_tokens=new_tokens,
        min_length=new_tokens + 1,  # counts the decoder start token: </s> is banned until the last step
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        early_stopping=False,
        num_return_sequences=1,
    )
    if impl == "transformers":
        return model.generate(input_ids=ids, do_sample=False, **common)
    try:
        return model.generate(ids, **common)
    except (ImportError, NotImplementedError) as err:
        raise GenerateUnavailable(f"{type(err).__name__}: {err}") from err


def _loadavg() -> Optional[str]:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def _rel_diff(ours, ref) -> float:
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------------
def child_make_checkpoint(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    import transformers

    torch.manual_seed(spec["seed"])
    config = transformers.LEDConfig(**LED_BASE_SHAPE)
    model = transformers.LEDForConditionalGeneration(config).eval()
    with torch.no_grad():  # a non-zero bias makes the comparison of logits meaningful
        model.final_logits_bias.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(spec["seed"]))
    model.save_pretrained(spec["checkpoint"])
    return {"parameters": sum(p.numel() for p in model.parameters())}


def child_memory(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    impl, task = spec["impl"], spec["task"]
    model = _load(impl, "encoder" if task == "encoder" else "generate", spec["checkpoint"])
    inputs = _encoder_inputs(spec["length"], spec["seed"])
    gc.collect()
    _malloc_trim()
    loaded_kb = _status_kb("VmRSS")
    reset = _reset_peak_rss()
    before_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        if task == "encoder":
            out = _encoder_call(impl, model, inputs)
        else:
            try:
                out = _generate_call(impl, model, inputs, spec["beams"], spec["new_tokens"])
            except GenerateUnavailable as err:
                return {"unavailable": str(err)}
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM")
    del out
    return {
        "extra_mib": (peak_kb - before_kb) / 1024,
        "rss_loaded_mib": loaded_kb / 1024,
        "peak_reset": reset,
        "cold_seconds": seconds,
    }


def child_time_encoder(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    impls = spec["impls"]
    models = {impl: _load(impl, "encoder", spec["checkpoint"]) for impl in impls}
    inputs = _encoder_inputs(spec["length"], spec["seed"])
    times: Dict[str, List[float]] = {impl: [] for impl in impls}
    cpu: Dict[str, List[float]] = {impl: [] for impl in impls}  # process CPU seconds per wall second
    outputs: Dict[str, Any] = {}
    with torch.no_grad():
        for _ in range(spec["warmup"]):
            for impl in impls:
                outputs[impl] = _encoder_call(impl, models[impl], inputs)
        for rep in range(spec["repeats"]):
            order = impls if rep % 2 == 0 else impls[::-1]
            for impl in order:
                outputs.pop(impl, None)
                gc.collect()
                start, cpu_start = time.perf_counter(), time.process_time()
                outputs[impl] = _encoder_call(impl, models[impl], inputs)
                times[impl].append(time.perf_counter() - start)
                cpu[impl].append((time.process_time() - cpu_start) / times[impl][-1])
                _progress(f"    encoder L={spec['length']} {impl} run {rep + 1}/{spec['repeats']}: "
                          f"{times[impl][-1]:.2f} s")
    result: Dict[str, Any] = {"times": times, "cpu_per_wall": cpu, "loadavg_after": _loadavg()}
    if "ours" in outputs and "transformers" in outputs:
        result["rel_diff"] = _rel_diff(outputs["ours"], outputs["transformers"])
        result["max_abs"] = float(outputs["transformers"].abs().max())
    return result


def child_time_generate(spec: Dict[str, Any]) -> Dict[str, Any]:
    torch = _setup_torch(spec["threads"])
    inputs = _encoder_inputs(spec["length"], spec["seed"])
    models = {}
    models["ours"] = _load("ours", "generate", spec["checkpoint"])
    try:  # one tiny call first, so an unfinished generate() costs no transformers load
        with torch.no_grad():
            small = tuple(t[:, :16] for t in inputs)
            _generate_call("ours", models["ours"], small, 1, 1)
    except GenerateUnavailable as err:
        return {"unavailable": str(err)}
    models["transformers"] = _load("transformers", "generate", spec["checkpoint"])
    impls = list(IMPLS)
    times: Dict[str, List[float]] = {impl: [] for impl in impls}
    cpu: Dict[str, List[float]] = {impl: [] for impl in impls}  # process CPU seconds per wall second
    outputs: Dict[str, Any] = {}
    with torch.no_grad():
        for _ in range(spec["warmup"]):
            for impl in impls:
                outputs[impl] = _generate_call(impl, models[impl], inputs, spec["beams"], spec["new_tokens"])
        for rep in range(spec["repeats"]):
            order = impls if rep % 2 == 0 else impls[::-1]
            for impl in order:
                outputs.pop(impl, None)
                gc.collect()
                start, cpu_start = time.perf_counter(), time.process_time()
                outputs[impl] = _generate_call(impl, models[impl], inputs, spec["beams"], spec["new_tokens"])
                times[impl].append(time.perf_counter() - start)
                cpu[impl].append((time.process_time() - cpu_start) / times[impl][-1])
                _progress(f"    generate {impl} run {rep + 1}/{spec['repeats']}: {times[impl][-1]:.2f} s")
    ours, ref = outputs["ours"], outputs["transformers"]
    if not isinstance(ours, torch.Tensor):  # a generate output object
        ours = ours.sequences
    same_shape = tuple(ours.shape) == tuple(ref.shape)
    identical = same_shape and bool(torch.equal(ours.cpu(), ref.cpu()))
    first_diff = None
    if not identical and ours.dim() == 2 and ref.dim() == 2:
        n = min(ours.shape[1], ref.shape[1])
        diff = (ours[0, :n] != ref[0, :n]).nonzero()
        first_diff = int(diff[0]) if len(diff) else n
    return {
        "times": times,
        "cpu_per_wall": cpu,
        "loadavg_after": _loadavg(),
        "identical": identical,
        "shapes": [list(ours.shape), list(ref.shape)],
        "first_difference_at": first_diff,
        "ours_ids": ours[0].tolist(),
        "transformers_ids": ref[0].tolist(),
    }


CHILDREN = {
    "make_checkpoint": child_make_checkpoint,
    "memory": child_memory,
    "time_encoder": child_time_encoder,
    "time_generate": child_time_generate,
}


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_child(spec: Dict[str, Any], timeout: Optional[float]) -> Dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its result dict or {'error': ...}."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": f"child exited with status {proc.returncode} and no result"
                     + (" (killed: out of memory?)" if proc.returncode in (-9, 137) else "")}


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        result = CHILDREN[spec["what"]](spec)
    except Exception as err:  # report, don't hide: the parent prints it in the table
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}"}
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------------
# Parent: orchestration and report
# ---------------------------------------------------------------------------------------------------------
def _median(values: Optional[List[float]]) -> Optional[float]:
    return statistics.median(values) if values else None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark spacy-led's LED against transformers' LED (encoder forward and generate, CPU): "
                    "median times, extra peak memory of one call (each in a fresh process), the ratios, and "
                    "agreement of the outputs. The method, in full, follows the options.",
        epilog="Method\n======\n" + (__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="encoder input lengths (default 1024 4096 16384; --quick: 512 1024)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed encoder forwards per implementation and length (median reported; "
                             "default 5, or 2 for lengths > 4096; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed encoder forwards per implementation before timing (default 1; --quick: 0)")
    parser.add_argument("--full", action="store_true",
                        help="also run transformers at every length, however long (at 16384 tokens it takes minutes "
                             "and GBs); without it transformers is skipped above --hf-max-length")
    parser.add_argument("--hf-max-length", type=int, default=4096,
                        help="longest encoder input transformers is run at, unless --full (default 4096)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--no-encoder", action="store_true", help="skip the encoder benchmark")
    parser.add_argument("--no-generate", action="store_true", help="skip the generate benchmark")
    parser.add_argument("--gen-length", type=int, default=None,
                        help="generate: input tokens (default 4096; --quick: 512)")
    parser.add_argument("--gen-beams", type=int, default=4, help="generate: beams (default 4)")
    parser.add_argument("--gen-new-tokens", type=int, default=None,
                        help="generate: new tokens, all of them generated: max_new_tokens=N, min_length=N+1 "
                             "(default 64; --quick: 4)")
    parser.add_argument("--gen-repeats", type=int, default=None, help="generate: timed runs (default 2; --quick: 1)")
    parser.add_argument("--gen-warmup", type=int, default=0, help="generate: untimed runs before timing (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every process (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds before one measurement process is abandoned (default 3600)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test (about 1 minute on an idle machine, 2-4 when shared): encoder at 512 "
                             "and 1024 tokens, 2 repeats, no warm-up; generate from 512 tokens, 4 new tokens, 1 run")
    parser.add_argument("--json", metavar="PATH", help="also write all numbers to this JSON file")
    parser.add_argument("--show", metavar="PATH", help="print the tables of a --json file written earlier, run nothing")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        defaults = dict(lengths=[512, 1024], repeats=2, warmup=0, gen_length=512, gen_new_tokens=4, gen_repeats=1)
    else:
        defaults = dict(lengths=[1024, 4096, 16384], repeats=None, warmup=1, gen_length=4096, gen_new_tokens=64,
                        gen_repeats=2)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _repeats_for(args: argparse.Namespace, length: int) -> int:
    if args.repeats is not None:
        return args.repeats
    return 5 if length <= 4096 else 2


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args._child:
        child_main(args._child)
        return 0
    if args.show:
        print_report(json.loads(Path(args.show).read_text(encoding="utf-8")))
        return 0
    if not os.path.exists("/proc/self/status"):
        sys.exit("this benchmark reads /proc/self/status (Linux) for memory; it cannot run here")
    _setup_torch(args.threads)
    facts = machine_facts(args.threads)
    wall_start = time.time()
    hf_limit = None if args.full else args.hf_max_length
    report: Dict[str, Any] = {
        "machine": facts,
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "model": dict(LED_BASE_SHAPE),
        "encoder": [],
        "generate": None,
        "skipped": [],
    }
    base = dict(threads=args.threads, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_led_") as tmp:
        checkpoint = str(Path(tmp) / "led-base-random")
        _progress(f"building random led-base-16384-shaped weights (seed {args.seed}) in {checkpoint} ...")
        made = run_child(dict(base, what="make_checkpoint", checkpoint=checkpoint), args.timeout)
        if "error" in made:
            sys.exit(f"could not build the checkpoint: {made['error']}")
        report["model"]["parameters"] = made["parameters"]
        base["checkpoint"] = checkpoint

        if not args.no_encoder:
            for length in args.lengths:
                impls = ["ours"]
                if hf_limit is None or length <= hf_limit:
                    impls.append("transformers")
                else:
                    report["skipped"].append(f"transformers encoder at {length} tokens (longer than "
                                             f"--hf-max-length {hf_limit}; add --full to run it)")
                repeats = _repeats_for(args, length)
                _progress(f"encoder, {length} tokens: timing {' + '.join(impls)} "
                          f"({args.warmup} warm-up, {repeats} repeats) ...")
                row: Dict[str, Any] = {"length": length, "implementations": impls, "repeats": repeats,
                                       "warmup": args.warmup}
                timed = run_child(dict(base, what="time_encoder", length=length, impls=impls,
                                       warmup=args.warmup, repeats=repeats), args.timeout)
                row["timing"] = timed
                if not args.no_memory:
                    row["memory"] = {}
                    for impl in impls:
                        _progress(f"encoder, {length} tokens: memory of one {impl} forward (fresh process) ...")
                        row["memory"][impl] = run_child(dict(base, what="memory", task="encoder", impl=impl,
                                                             length=length), args.timeout)
                report["encoder"].append(row)

        if not args.no_generate:
            _progress(f"generate: {args.gen_length} input tokens, {args.gen_beams} beams, "
                      f"{args.gen_new_tokens} new tokens: timing ...")
            gen_spec = dict(base, length=args.gen_length, beams=args.gen_beams, new_tokens=args.gen_new_tokens)
            gen: Dict[str, Any] = {"length": args.gen_length, "beams": args.gen_beams,
                                   "new_tokens": args.gen_new_tokens, "repeats": args.gen_repeats,
                                   "warmup": args.gen_warmup}
            gen["timing"] = run_child(dict(gen_spec, what="time_generate", warmup=args.gen_warmup,
                                           repeats=args.gen_repeats), args.timeout)
            if "unavailable" in gen["timing"]:
                gen["unavailable"] = gen["timing"]["unavailable"]
            elif "error" not in gen["timing"] and not args.no_memory:
                gen["memory"] = {}
                for impl in IMPLS:
                    _progress(f"generate: memory of one {impl} call (fresh process) ...")
                    gen["memory"][impl] = run_child(dict(gen_spec, what="memory", task="generate", impl=impl),
                                                    args.timeout)
            report["generate"] = gen
    report["wall_seconds"] = time.time() - wall_start
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nnumbers written to {args.json}")
    return 0


def _memory_cell(memory: Optional[Dict[str, Any]], impl: str) -> str:
    if memory is None:
        return "-"
    entry = memory.get(impl)
    if entry is None:
        return "skipped"
    if "error" in entry:
        return "error"
    text = f"{entry['extra_mib']:.0f}"
    return text if entry.get("peak_reset", True) else text + "*"


def _cell(value: Optional[float], spec: str, missing: str = "-", suffix: str = "") -> str:
    return missing if value is None else format(value, spec) + suffix


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return lines


def _summarise(timing: Dict[str, Any], memory: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    times = timing.get("times", {}) if "error" not in timing else {}
    t_ours, t_hf = _median(times.get("ours")), _median(times.get("transformers"))
    best_ours = min(times["ours"]) if times.get("ours") else None
    best_hf = min(times["transformers"]) if times.get("transformers") else None
    mem_ours = mem_hf = None
    if memory:
        mem_ours = (memory.get("ours") or {}).get("extra_mib")
        mem_hf = (memory.get("transformers") or {}).get("extra_mib")
    return dict(
        ours_s=t_ours, transformers_s=t_hf, speedup=_ratio(t_hf, t_ours),
        ours_best_s=best_ours, transformers_best_s=best_hf, speedup_best=_ratio(best_hf, best_ours),
        ours_extra_mib=mem_ours, transformers_extra_mib=mem_hf, memory_ratio=_ratio(mem_ours, mem_hf),
    )


def _cpu_note(timing: Dict[str, Any]) -> Optional[str]:
    cpu = timing.get("cpu_per_wall")
    if not cpu:
        return None
    parts = [f"{impl} {_median(v):.2f}" for impl, v in cpu.items() if v]
    return "CPU s per wall s (median): " + ", ".join(parts) + f"; load average after: {timing.get('loadavg_after')}"


def print_report(report: Dict[str, Any]) -> None:
    m = report["machine"]
    s = report["settings"]
    print()
    print("spacy-led LED vs transformers LED (CPU)")
    print(f"  CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB RAM)")
    print(f"  torch {m['torch']}, transformers {m['transformers']}, python {m['python']}, "
          f"torch threads: {m['threads']}")
    print(f"  model: led-base-16384 shape, random weights (seed {s['seed']}), "
          f"{report['model'].get('parameters', 0) / 1e6:.1f} M parameters, float32, batch 1, "
          f"global attention on token 0")
    print(f"  peak-memory reset via /proc/self/clear_refs: {'yes' if m['peak_reset_via_clear_refs'] else 'NO'}")
    if s["quick"]:
        print("  --quick: smoke-test settings, numbers are not representative")
    verdicts: List[str] = []
    notes: List[str] = []

    if report["encoder"]:
        print()
        print("Encoder forward. time: median of N timed runs after warm-up (best: fastest run);")
        print("speedup = transformers / ours; MiB: extra peak RSS of one forward in a fresh process;")
        print("mem ratio = ours / transformers; diff = max|ours - transformers| / max|transformers|;")
        print(f"CPU s per wall s is {m['threads']:.2f} when nothing else competes for the CPUs")
        header = ["tokens", "N", "ours s", "hf s", "speedup", "best ours s", "best hf s", "best speedup",
                  "ours MiB", "hf MiB", "mem ratio", "diff", "diff ok"]
        rows = []
        for row in report["encoder"]:
            timing, memory = row["timing"], row.get("memory")
            summary = row["summary"] = _summarise(timing, memory)
            diff = summary["rel_diff"] = timing.get("rel_diff")
            hf_ran = "transformers" in row["implementations"]
            missing_hf = "-" if hf_ran else "skipped"
            rows.append([
                str(row["length"]), str(row["repeats"]),
                _cell(summary["ours_s"], ".2f"), _cell(summary["transformers_s"], ".2f", missing_hf),
                _cell(summary["speedup"], ".2f", suffix="x"),
                _cell(summary["ours_best_s"], ".2f"), _cell(summary["transformers_best_s"], ".2f", missing_hf),
                _cell(summary["speedup_best"], ".2f", suffix="x"),
                _memory_cell(memory, "ours"), _memory_cell(memory, "transformers"),
                _cell(summary["memory_ratio"], ".2f"), _cell(diff, ".1e"),
                "-" if diff is None else ("yes" if diff <= TOLERANCE else "NO"),
            ])
            if "error" in timing:
                notes.append(f"{row['length']} tokens: timing failed: {timing['error']}")
            elif _cpu_note(timing):
                notes.append(f"{row['length']} tokens: {_cpu_note(timing)}")
            for impl, entry in (memory or {}).items():
                if "error" in entry:
                    notes.append(f"{row['length']} tokens: memory of {impl} failed: {entry['error']}")
                elif "cold_seconds" in entry:
                    notes.append(f"{row['length']} tokens: {impl} memory run: first (cold) forward "
                                 f"{entry['cold_seconds']:.1f} s, RSS after loading {entry['rss_loaded_mib']:.0f} MiB")
            if row["length"] == 4096 and summary["speedup"] is not None:
                sp = summary["speedup"]
                verdicts.append(f"4096 tokens: speedup {sp:.2f}x (best-of-N {summary['speedup_best']:.2f}x), "
                                f"target >= 2x: {'met' if sp >= 2 else 'MISSED'}")
                if summary["memory_ratio"] is not None:
                    mr = summary["memory_ratio"]
                    verdicts.append(f"4096 tokens: memory ratio {mr:.2f}, target <= 0.5: "
                                    f"{'met' if mr <= 0.5 else 'MISSED'}")
            if diff is not None:
                verdicts.append(f"{row['length']} tokens: outputs agree to {diff:.1e}, tolerance {TOLERANCE:g}: "
                                f"{'met' if diff <= TOLERANCE else 'MISSED'}")
        print("\n".join(_table(header, rows)))
        if any(not e.get("peak_reset", True) for r in report["encoder"] for e in (r.get("memory") or {}).values()):
            print("  * peak could not be reset: lower bound")
        for note in notes:
            print("  " + note)

    gen = report.get("generate")
    if gen is not None:
        print()
        print(f"generate: {gen['length']} input tokens, {gen['beams']} beams, {gen['new_tokens']} new tokens "
              f"(max_new_tokens = {gen['new_tokens']}, min_length = {gen['new_tokens'] + 1}), "
              f"global attention on token 0")
        timing = gen["timing"]
        if "unavailable" in gen:
            print(f"  generate: not available yet ({gen['unavailable']})")
        elif "error" in timing:
            print(f"  generate failed: {timing['error']}")
        else:
            memory = gen.get("memory")
            summary = gen["summary"] = _summarise(timing, memory)
            summary["identical"] = timing["identical"]
            same = ("yes" if timing["identical"]
                    else f"NO (first difference at position {timing['first_difference_at']})")
            header = ["N", "ours s", "hf s", "speedup", "best speedup", "ours MiB", "hf MiB", "mem ratio",
                      "identical ids"]
            rows = [[
                str(gen["repeats"]), _cell(summary["ours_s"], ".2f"), _cell(summary["transformers_s"], ".2f"),
                _cell(summary["speedup"], ".2f", suffix="x"), _cell(summary["speedup_best"], ".2f", suffix="x"),
                _memory_cell(memory, "ours"), _memory_cell(memory, "transformers"),
                _cell(summary["memory_ratio"], ".2f"), same,
            ]]
            print("\n".join(_table(header, rows)))
            print(f"  generated shapes: ours {timing['shapes'][0]}, transformers {timing['shapes'][1]}")
            if _cpu_note(timing):
                print(f"  {_cpu_note(timing)}")
            for impl, entry in (memory or {}).items():
                if "error" in entry:
                    print(f"  memory of {impl} failed: {entry['error']}")
                elif "cold_seconds" in entry:
                    print(f"  {impl} memory run: first (cold) call {entry['cold_seconds']:.1f} s, "
                          f"RSS after loading {entry['rss_loaded_mib']:.0f} MiB")

    print()
    if report["skipped"]:
        print("Not run:")
        for item in report["skipped"]:
            print(f"  - {item}")
    else:
        print("Not run: nothing skipped")
    if verdicts:
        print("Targets:")
        for item in verdicts:
            print(f"  - {item}")
    print(f"total wall time {report['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
