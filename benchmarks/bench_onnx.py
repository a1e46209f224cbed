#!/usr/bin/env python
"""onnxruntime (spacy-led's ONNX export) against spacy-led's PyTorch LED and transformers' LED, in one run.

Model: led-base-16384's shape (vocab 50265, d_model 768, 6 + 6 layers, 12 heads, ffn 3072, window 1024, 16384
encoder / 1024 decoder positions), random weights from transformers' ``LEDForConditionalGeneration`` under a
fixed seed, saved once; spacy-led loads that checkpoint and ``spacy_led.onnx.export_module`` exports it.
float32, batch 1, global attention on the first token, random ids; torch and onnxruntime both get
``--threads`` threads (intra-op; onnxruntime's inter-op 1).

* Encoder forward at ``--length`` tokens: median of ``--repeats`` timed runs after one warm-up, the three
  implementations alternating; max relative difference of the outputs to transformers'.
* ``generate`` from ``--length`` tokens, ``--beams`` beams, ``--new-tokens`` new tokens (``min_length`` bans
  ``</s>`` so every run generates them all): median of ``--gen-repeats`` runs after one warm-up; the ids are
  compared.
* With ``--int8``: the graphs quantized by ``onnxruntime.quantization.quantize_dynamic`` (int8 weights of
  every MatMul/Gemm, activations quantized on the fly), timed the same way, with the drift from fp32: max
  relative error of the first step's logits (``max|int8 - fp32| / max|fp32|``) and the share of greedy tokens
  equal to fp32's (``--new-tokens`` steps).

Each time is printed with its ratio to onnxruntime fp32's (> 1: slower than onnxruntime fp32); absolute
times drift on a shared machine, ratios much less. Exporting led-base takes minutes (constant folding).

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_onnx.py --int8          # ~20 minutes here
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_onnx.py --length 1024 --new-tokens 8 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import LED_BASE_SHAPE  # noqa: E402  (the led-base shape every benchmark uses)



def _timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.suffix == ".onnx":
            quantize_dynamic(str(item), str(dst / item.name), weight_type=QuantType.QInt8)
        elif item.is_file():
            shutil.copy(item, dst / item.name)


def _time_encoders(encoders, args) -> None:
    results = {}
    with torch.no_grad():
        for fn in encoders.values():
            fn()  # warm-up
        for name, fn in encoders.items():
            results[name] = _timed(fn, args.repeats)
    reference = results.get("transformers", results["spacy-led torch"])[1]
    print(f"\nencoder forward, {args.length} tokens (median of {args.repeats}):")
    base = results["onnxruntime"][0]
    for name, (seconds, out) in results.items():
        diff = np.abs(out - reference).max() / np.abs(reference).max()
        print(f"  {name:18s} {seconds:7.2f} s   time / onnxruntime fp32's: {seconds / base:5.2f}   "
              f"max rel. diff to {'transformers' if 'transformers' in results else 'torch'} {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--gen-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true", help="also onnxruntime's dynamic int8 quantization")
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--no-encoder", action="store_true", help="time generate only")
    args = parser.parse_args()

    import onnxruntime as ort
    import transformers

    from spacy_led.modeling import LEDForConditionalGeneration
    from spacy_led.onnx import OnnxLED, export_module

    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()}, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, transformers {transformers.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    try:
        torch.manual_seed(0)
        hf = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**LED_BASE_SHAPE)).eval()
        hf.save_pretrained(tmp / "ckpt")
        ours = LEDForConditionalGeneration.from_pretrained(tmp / "ckpt").eval()
        start = time.perf_counter()
        export_module(ours, tmp / "onnx")
        print(f"export: {time.perf_counter() - start:.1f} s")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        runtimes = {"onnxruntime": OnnxLED(tmp / "onnx", session_options=options)}
        if args.int8:
            _quantize(tmp / "onnx", tmp / "onnx_int8")
            runtimes["onnxruntime int8"] = OnnxLED(tmp / "onnx_int8", session_options=options)

        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(3, LED_BASE_SHAPE["vocab_size"], (1, args.length), generator=generator)
        ids[0, 0], ids[0, -1] = LED_BASE_SHAPE["bos_token_id"], LED_BASE_SHAPE["eos_token_id"]
        mask = torch.ones_like(ids)
        glob = torch.zeros_like(ids)
        glob[0, 0] = 1

        encoders = {name: (lambda r=r: r.encode(ids.numpy(), mask.numpy(), glob.numpy()))
                    for name, r in runtimes.items()}
        encoders["spacy-led torch"] = lambda: ours.led.encoder(ids, attention_mask=mask,
                                                                global_attention_mask=glob).last_hidden_state.numpy()
        if not args.no_transformers:
            encoders["transformers"] = lambda: hf.led.encoder(input_ids=ids, attention_mask=mask,
                                                               global_attention_mask=glob).last_hidden_state.numpy()
        if not args.no_encoder:
            _time_encoders(encoders, args)

        settings = dict(num_beams=args.beams, max_new_tokens=args.new_tokens, min_length=args.new_tokens + 1)
        generators = {name: (lambda r=r: r.generate(ids.numpy(), attention_mask=mask.numpy(),
                                                    global_attention_mask=glob.numpy(), **settings))
                      for name, r in runtimes.items()}
        generators["spacy-led torch"] = lambda: ours.generate(ids, attention_mask=mask, global_attention_mask=glob,
                                                              **settings).numpy()
        if not args.no_transformers:
            generators["transformers"] = lambda: hf.generate(ids, attention_mask=mask, global_attention_mask=glob,
                                                             **settings).numpy()
        results = {}
        with torch.no_grad():
            for fn in generators.values():
                fn()
            for name, fn in generators.items():
                results[name] = _timed(fn, args.gen_repeats)
        print(f"\ngenerate, {args.length} tokens in, {args.beams} beams, {args.new_tokens} new tokens "
              f"(median of {args.gen_repeats}):")
        base = results["onnxruntime"][0]
        torch_ids = results["spacy-led torch"][1]
        for name, (seconds, out) in results.items():
            same = out.shape == torch_ids.shape and bool((out == torch_ids).all())
            print(f"  {name:18s} {seconds:7.2f} s   time / onnxruntime fp32's: {seconds / base:5.2f}   "
                  f"ids equal to spacy-led torch's: {same}")

        if args.int8:
            fp32, int8 = runtimes["onnxruntime"], runtimes["onnxruntime int8"]
            start = np.full((1, 1), LED_BASE_SHAPE["decoder_start_token_id"], dtype=np.int64)
            logits = []
            for runtime in (fp32, int8):
                encoded = runtime.encode(ids.numpy(), mask.numpy(), glob.numpy())
                logits.append(runtime.session("decoder_init").run(
                    ["logits"], {"encoder_hidden_states": encoded, "attention_mask": mask.numpy(),
                                 "decoder_input_ids": start})[0])
            drift = np.abs(logits[1] - logits[0]).max() / np.abs(logits[0]).max()
            greedy = [r.generate(ids.numpy(), attention_mask=mask.numpy(), global_attention_mask=glob.numpy(),
                                 num_beams=1, max_new_tokens=args.new_tokens, min_length=args.new_tokens + 1)
                      for r in (fp32, int8)]
            agreement = float((greedy[0][:, 1:] == greedy[1][:, 1:]).mean())
            print(f"\nint8 drift: max rel. error of the first step's logits {drift:.2e}; greedy tokens equal to "
                  f"fp32's: {agreement:.0%} of {args.new_tokens}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
