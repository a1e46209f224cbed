#!/usr/bin/env python
"""spacy-led's LED on a CUDA GPU against transformers' LED, in one process: agreement, time and memory.

The other benchmarks measure the CPU, where this project is developed and tested; this one checks that the same
code runs on a GPU with transformers' numbers, and how it compares there. Model: led-base-16384's shape with
random weights (``bench_modeling.LED_BASE_SHAPE``, written once by transformers' ``save_pretrained``, loaded by
each library's own ``from_pretrained``), batch 1, global attention on ``<s>``.

Cases (each library runs each case once untimed, then ``--repeats`` times, alternating which goes first; medians;
``torch.cuda.synchronize()`` around every timed call):

* ``encoder``: one forward at each of ``--lengths`` tokens, fp32 (TF32 off, so both compute in full float32
  and their outputs compare at float32 tolerance), ``torch.no_grad()``; max relative difference of the
  outputs, time, and the peak GPU memory the call allocates beyond what was allocated before it
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``).
* ``generate``: ``--gen-length`` tokens in, 4 beams, ``--new-tokens`` new tokens (``</s>`` banned until the
  last, so both generate every token), fp32; token ids compared.
* ``train``: one training step (forward with 256 label tokens, ``backward``) at ``--train-length`` tokens with
  gradient checkpointing, dropout 0, fp32: loss, the largest relative gradient difference over all parameters,
  time and peak memory.
* ``bf16``: the encoder at the longest length and ``generate`` with both models cast to bfloat16 (the usual
  inference setting on a GPU): time, and each library's drift from its own float32 output (not compared with
  each other: two correct bf16 implementations round differently).

Run on a machine with a CUDA GPU, from the repository root (``--device cpu --small`` is a smoke run of the
script itself on a tiny shape)::

    PYTHONPATH=. python benchmarks/bench_gpu.py
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --small --repeats 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import LED_BASE_SHAPE, _rel_diff  # noqa: E402  (the sibling script's shape and helper)

SMALL_SHAPE = dict(LED_BASE_SHAPE, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, attention_window=64,
                   max_encoder_position_embeddings=2048, vocab_size=1000)
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def make_checkpoint(torch, shape: Dict[str, Any], path: str, seed: int) -> None:
    import transformers

    torch.manual_seed(seed)
    model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**{**shape, **NO_DROPOUT}))
    with torch.no_grad():  # a non-zero bias makes the comparison of logits meaningful
        model.final_logits_bias.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
    model.save_pretrained(path)


def load(torch, checkpoint: str, device: str) -> Dict[str, Any]:
    import transformers

    from spacy_led import modeling

    return {
        "ours": modeling.LEDForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32),
        "transformers": transformers.LEDForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32),
    }


def inputs(torch, shape: Dict[str, Any], length: int, seed: int, device: str, labels: int = 0):
    gen = torch.Generator().manual_seed(seed + length)
    ids = torch.randint(3, shape["vocab_size"], (1, length), generator=gen)
    ids[0, 0], ids[0, -1] = shape["bos_token_id"], shape["eos_token_id"]
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=global_mask)
    if labels:
        batch["labels"] = torch.randint(3, shape["vocab_size"], (1, labels), generator=gen)
        batch["labels"][0, -1] = shape["eos_token_id"]
    return {key: value.to(device) for key, value in batch.items()}


class Timer:
    """Times calls on one device: synchronizes before and after, records the peak memory the call adds."""

    def __init__(self, torch, device: str):
        self.torch, self.cuda = torch, device.startswith("cuda")

    def __call__(self, fn: Callable[[], Any]) -> Tuple[Any, float, float]:
        torch = self.torch
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        extra = (torch.cuda.max_memory_allocated() - before) / 2**20 if self.cuda else float("nan")
        return out, seconds, extra


def alternate(timer: Timer, calls: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, Dict[str, Any]]:
    """One untimed call each, then ``repeats`` timed rounds alternating the order; medians and the last output."""
    results = {name: {"out": fn(), "times": [], "mib": []} for name, fn in calls.items()}
    names = list(calls)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            out, seconds, mib = timer(calls[name])
            results[name]["out"] = out
            results[name]["times"].append(seconds)
            results[name]["mib"].append(mib)
    for result in results.values():
        result["time"] = statistics.median(result["times"])
        result["peak_mib"] = max(result["mib"])
    return results


def encoder_call(torch, name: str, model, batch):
    encoder = model.get_encoder() if name == "transformers" else model.led.encoder
    with torch.no_grad():
        return encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       global_attention_mask=batch["global_attention_mask"]).last_hidden_state


def generate_call(torch, name: str, model, batch, new_tokens: int):
    common = dict(attention_mask=batch["attention_mask"], global_attention_mask=batch["global_attention_mask"],
                  num_beams=4, max_new_tokens=new_tokens, min_length=new_tokens + 1, length_penalty=1.0,
                  no_repeat_ngram_size=0, early_stopping=False)
    with torch.no_grad():
        if name == "transformers":
            return model.generate(input_ids=batch["input_ids"], do_sample=False, **common)
        return model.generate(batch["input_ids"], **common)


def train_call(torch, model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return float(loss.detach())


def row(cells: List[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def compared(label: str, res: Dict[str, Dict[str, Any]], seconds: bool = False) -> List[str]:
    """The cells of one case: its label, each library's median time, the speed-up and the peak memories."""
    ours, theirs = res["ours"], res["transformers"]
    show = (lambda t: f"{t:.2f} s") if seconds else (lambda t: f"{t * 1e3:.0f} ms")
    return [label, show(ours["time"]), show(theirs["time"]), f"{theirs['time'] / ours['time']:.2f}x",
            f"{ours['peak_mib']:.0f} / {theirs['peak_mib']:.0f} MiB"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a tiny model shape (smoke run of the script)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--gen-length", type=int, default=16384)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--train-length", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    import transformers

    transformers.logging.set_verbosity_error()
    shape = SMALL_SHAPE if args.small else LED_BASE_SHAPE
    if args.small:
        args.lengths, args.gen_length, args.new_tokens, args.train_length = [256, 1024], 512, 8, 1024
    device = args.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(f"device {name}, torch {torch.__version__}, transformers {transformers.__version__}")
    timer = Timer(torch, device)
    failures = 0
    with tempfile.TemporaryDirectory() as checkpoint:
        make_checkpoint(torch, shape, checkpoint, args.seed)
        models = load(torch, checkpoint, device)
    for model in models.values():
        model.to(device).eval()

    print("\n" + row(["fp32", "spacy-led", "transformers", "speed-up", "peak memory (ours / theirs)", "agreement"]))
    print(row(["---"] * 6))
    fp32_out: Dict[Tuple[str, str], Any] = {}
    for length in args.lengths:
        batch = inputs(torch, shape, length, args.seed, device)
        res = alternate(timer, {n: (lambda n=n: encoder_call(torch, n, models[n], batch)) for n in models},
                        args.repeats)
        diff = _rel_diff(res["ours"]["out"], res["transformers"]["out"])
        failures += diff > 1e-4
        fp32_out[("encoder", str(length))] = {n: res[n]["out"] for n in res}
        print(row(compared(f"encoder, {length:,} tokens", res) + [f"max rel. diff {diff:.1e}"]), flush=True)

    batch = inputs(torch, shape, args.gen_length, args.seed, device)
    res = alternate(timer, {n: (lambda n=n: generate_call(torch, n, models[n], batch, args.new_tokens))
                            for n in models}, args.repeats)
    same = torch.equal(res["ours"]["out"].cpu(), res["transformers"]["out"].cpu())
    failures += not same
    fp32_out[("generate", "")] = {n: res[n]["out"] for n in res}
    label = f"generate, {args.gen_length:,} tokens, 4 beams, {args.new_tokens} new"
    print(row(compared(label, res, seconds=True) + ["identical ids" if same else "DIFFERENT ids"]), flush=True)

    batch = inputs(torch, shape, args.train_length, args.seed, device, labels=256 if not args.small else 32)
    for model in models.values():
        model.train()
        model.gradient_checkpointing_enable()
    models["transformers"].config.use_cache = False  # what transformers asks for with checkpointing
    res = alternate(timer, {n: (lambda n=n: train_call(torch, models[n], batch)) for n in models}, 1)
    grads = {n: {k: p.grad for k, p in models[n].named_parameters() if p.grad is not None} for n in models}
    if set(grads["ours"]) != set(grads["transformers"]):
        failures += 1
        print(f"gradients of different parameters: {sorted(set(grads['ours']) ^ set(grads['transformers']))}")
    # As in bench_train16k.py: relative to the larger of a gradient's own largest value and 1% of the model's
    # largest gradient (a key bias's gradient is zero up to rounding noise: it cancels in the softmax).
    floor = 1e-2 * max(float(g.abs().max()) for g in grads["transformers"].values())
    worst, worst_name = 0.0, ""
    for pname in sorted(set(grads["ours"]) & set(grads["transformers"])):
        ref = grads["transformers"][pname]
        diff = float((grads["ours"][pname] - ref).abs().max() / ref.abs().max().clamp_min(floor))
        if diff >= worst:
            worst, worst_name = diff, pname
    loss_diff = abs(res["ours"]["out"] - res["transformers"]["out"])
    failures += worst > 1e-4 or loss_diff > 1e-5 * abs(res["transformers"]["out"])
    label = f"training step, {args.train_length:,} tokens + {batch['labels'].shape[1]} labels, checkpointing"
    print(row(compared(label, res) + [
               f"loss {res['ours']['out']:.6f} / {res['transformers']['out']:.6f}, grads max rel. diff "
               f"{worst:.1e} ({worst_name})"]), flush=True)
    for model in models.values():
        model.zero_grad(set_to_none=True)
        model.eval()
    models["transformers"].config.use_cache = True

    if device.startswith("cuda") or args.small:  # bf16 on a CPU only to smoke-test the script
        for model in models.values():
            model.to(torch.bfloat16)
        print("\n" + row(["bf16", "spacy-led", "transformers", "speed-up", "peak memory (ours / theirs)",
                          "drift from own fp32 (ours / theirs)"]))
        print(row(["---"] * 6))
        length = max(args.lengths)
        batch = inputs(torch, shape, length, args.seed, device)
        res = alternate(timer, {n: (lambda n=n: encoder_call(torch, n, models[n], batch)) for n in models},
                        args.repeats)
        ref = fp32_out[("encoder", str(length))]
        print(row(compared(f"encoder, {length:,} tokens", res) + [
                   f"max rel. diff {_rel_diff(res['ours']['out'], ref['ours']):.1e} / "
                   f"{_rel_diff(res['transformers']['out'], ref['transformers']):.1e}"]), flush=True)
        batch = inputs(torch, shape, args.gen_length, args.seed, device)
        res = alternate(timer, {n: (lambda n=n: generate_call(torch, n, models[n], batch, args.new_tokens))
                                for n in models}, args.repeats)
        ref = fp32_out[("generate", "")]

        def agreement(a, b) -> str:
            a, b = a.cpu()[0], b.cpu()[0]
            n = min(len(a), len(b))
            return f"{int((a[:n] == b[:n]).sum())}/{n} tokens"

        label = f"generate, {args.gen_length:,} tokens, 4 beams, {args.new_tokens} new"
        print(row(compared(label, res, seconds=True) + [
                   f"same token as own fp32: {agreement(res['ours']['out'], ref['ours'])} / "
                   f"{agreement(res['transformers']['out'], ref['transformers'])}"]), flush=True)
    if failures:
        print(f"{failures} check(s) failed: outputs differ from transformers beyond float32 tolerance",
              file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
