#!/usr/bin/env python
"""Dynamic int8 (``quantize = "int8"``, spacy_led/modeling/quantize.py) against float32 on the CPU: speed and drift.

One process, one model of led-base-16384's shape (``bench_modeling.LED_BASE_SHAPE``, random weights), and its
int8 copy; every timing alternates which of the two runs first and reports the median (and the best) of each.

Speed
    * encoder: one forward of ``--length`` tokens (batch 1, global attention on ``<s>``);
    * ``generate``: ``--new-tokens`` tokens from ``--gen-length`` input tokens, greedy and with ``--beams`` beams
      (``</s>`` banned until the last token, so every run generates the same number of tokens).
    The speed-up is float32's median / int8's (> 1: int8 is faster).

Drift (``--drift-seeds`` checkpoints for each ``init_std`` in ``--init-std``: 0.3, a random model whose output
depends on its input, which the usual 0.02 does not give, and 0.02, the weight scale of a trained checkpoint;
``--drift-inputs`` inputs of ``--drift-length`` tokens each)
    * max relative logit error: ``max|int8 - fp32| / max|fp32|`` of the decoder's logits under teacher forcing
      (``--drift-decoder-tokens`` random decoder tokens), the worst over all checkpoints and inputs;
    * greedy token agreement: the share of positions where int8's greedy output (``--drift-new-tokens`` tokens)
      equals float32's, and how many inputs give the identical sequence. Once the two differ, the rest of the
      sequence follows different prefixes, so agreement after a first difference is not expected.
    The same two numbers are printed for a reference perturbation: the float32 model with its weights rounded
    to bfloat16 (a relative change of at most 0.4% per weight), which shows how sensitive the checkpoint itself
    is to any small change of its weights.

Kernels (``--kernels``): the candidate CPU int8 matrix products on led-base's Linear shapes (an encoder batch of
1,024 rows; a decoder step of 4 rows, beams, through a 768 x 768 projection and the 768 x 50,265 output layer;
a greedy step's one row through a 768 x 768 projection and the fused 768 x 2,304 query/key/value projection),
each against ``F.linear`` in float32 in the same run: fbgemm's ``quantized::linear_dynamic`` (the one used),
oneDNN's ``onednn::qlinear_pointwise`` with per-call activation scales, ``aten._weight_int8pack_mm`` (weight-only),
and torchao's ``Int8DynamicActivationInt8WeightConfig`` / ``Int8WeightOnlyConfig`` when torchao is installed
(it is not a dependency). Printed: speed-up over float32 (> 1: faster) and max relative error.

Examples (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_int8.py                 # ~6 minutes on 2 busy cores
    PYTHONPATH=. python benchmarks/bench_int8.py --quick         # ~1.5 minutes
    PYTHONPATH=. python benchmarks/bench_int8.py --kernels       # the kernel comparison only, ~1 minute
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import LED_BASE_SHAPE  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=4096, help="encoder input tokens (default 4096)")
    parser.add_argument("--gen-length", type=int, default=4096, help="generate: input tokens (default 4096)")
    parser.add_argument("--new-tokens", type=int, default=64, help="generate: new tokens (default 64)")
    parser.add_argument("--beams", type=int, default=4, help="generate: beams of the beam-search run (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--drift-seeds", type=int, default=3, help="random checkpoints for the drift (default 3)")
    parser.add_argument("--drift-inputs", type=int, default=2, help="inputs per checkpoint (default 2)")
    parser.add_argument("--drift-length", type=int, default=1024, help="drift: input tokens (default 1024)")
    parser.add_argument("--drift-decoder-tokens", type=int, default=64, help="drift: teacher-forced tokens")
    parser.add_argument("--drift-new-tokens", type=int, default=32, help="drift: greedy tokens compared")
    parser.add_argument("--init-std", type=float, nargs="+", default=[0.3, 0.02],
                        help="drift: init_std of the checkpoints (default 0.3 0.02)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--no-speed", action="store_true", help="only the drift")
    parser.add_argument("--no-drift", action="store_true", help="only the speed")
    parser.add_argument("--kernels", action="store_true", help="only the comparison of int8 kernels")
    parser.add_argument("--quick", action="store_true", help="1024 tokens, 16 new tokens, 1 repeat, 1 drift seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.length = args.gen_length = 1024
        args.new_tokens, args.repeats, args.drift_seeds, args.drift_length = 16, 1, 1, 512
    return args


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def build(seed: int, init_std: float):
    import torch

    from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration
    from spacy_led.modeling.quantize import quantize_dynamic_int8

    torch.manual_seed(seed)
    model = LEDForConditionalGeneration(LEDConfig(**LED_BASE_SHAPE, init_std=init_std)).eval()
    return model, quantize_dynamic_int8(model)


def inputs(length: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, LED_BASE_SHAPE["vocab_size"], (1, length), generator=generator)
    ids[0, 0], ids[0, -1] = LED_BASE_SHAPE["bos_token_id"], LED_BASE_SHAPE["eos_token_id"]
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob)


def generate(model, batch, beams: int, new_tokens: int):
    return model.generate(**batch, num_beams=beams, max_new_tokens=new_tokens, min_length=new_tokens + 1,
                          length_penalty=1.0, no_repeat_ngram_size=0, early_stopping=False)


def time_pair(calls: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    """Each call once untimed, then ``repeats`` timed rounds, alternating which goes first."""
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    order = list(calls)
    for round_ in range(repeats):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def report_speed(label: str, times: Dict[str, List[float]]) -> None:
    fp32, int8 = statistics.median(times["fp32"]), statistics.median(times["int8"])
    print(f"{label:<34} fp32 {fp32:7.2f} s (best {min(times['fp32']):6.2f})   int8 {int8:7.2f} s "
          f"(best {min(times['int8']):6.2f})   speed-up x{fp32 / int8:.2f} (best x{min(times['fp32']) / min(times['int8']):.2f})")


def speed(args) -> None:
    import torch

    model, quantized = build(0, 0.02)
    with torch.no_grad():
        batch = inputs(args.length, 1)
        times = time_pair({"fp32": lambda: model.led.encoder(**batch), "int8": lambda: quantized.led.encoder(**batch)},
                          args.repeats)
        report_speed(f"encoder, {args.length} tokens", times)
        batch = inputs(args.gen_length, 2)
        for beams in (1, args.beams):
            outputs: Dict[str, torch.Tensor] = {}

            def run(name, m):
                return lambda: outputs.__setitem__(name, generate(m, batch, beams, args.new_tokens))

            times = time_pair({"fp32": run("fp32", model), "int8": run("int8", quantized)}, args.repeats)
            what = "greedy" if beams == 1 else f"{beams} beams"
            report_speed(f"generate {what}, {args.gen_length}->{args.new_tokens}", times)


def bfloat16_rounded(model):
    """The float32 model with every weight rounded to bfloat16 and back: the reference perturbation."""
    import copy

    rounded = copy.deepcopy(model)
    for parameter in rounded.parameters():
        parameter.data = parameter.data.bfloat16().float()
    return rounded


def drift(args, init_std: float) -> Dict[str, Tuple[float, float, int, int]]:
    """Per variant (int8, bf16-rounded weights): worst relative logit error, greedy token agreement, identical
    sequences, runs."""
    import torch

    totals = {name: [0.0, 0, 0, 0, 0] for name in ("int8", "bf16 weights")}  # worst, agree, positions, same, runs
    for seed in range(args.drift_seeds):
        model, quantized = build(100 + seed, init_std)
        variants = {"int8": quantized, "bf16 weights": bfloat16_rounded(model)}
        for item in range(args.drift_inputs):
            batch = inputs(args.drift_length, 1000 * seed + item)
            generator = torch.Generator().manual_seed(7 + item)
            decoder_ids = torch.randint(3, LED_BASE_SHAPE["vocab_size"], (1, args.drift_decoder_tokens),
                                        generator=generator)
            with torch.no_grad():
                expected = model(**batch, decoder_input_ids=decoder_ids).logits
                fp32_ids = generate(model, batch, 1, args.drift_new_tokens)[0]
                for name, variant in variants.items():
                    actual = variant(**batch, decoder_input_ids=decoder_ids).logits
                    ids = generate(variant, batch, 1, args.drift_new_tokens)[0]
                    if ids.shape != fp32_ids.shape:
                        raise AssertionError(f"greedy outputs of different lengths: {ids.shape} vs {fp32_ids.shape}")
                    total = totals[name]
                    total[0] = max(total[0], float((actual - expected).abs().max() / expected.abs().max()))
                    total[1] += int((ids == fp32_ids).sum())
                    total[2] += ids.numel()
                    total[3] += bool(torch.equal(ids, fp32_ids))
                    total[4] += 1
    return {name: (worst, agree / positions, same, runs) for name, (worst, agree, positions, same, runs) in totals.items()}


def kernels(repeats: int) -> None:
    import copy

    import torch
    from torch.nn import functional as F

    from spacy_led.modeling.quantize import DynamicInt8Linear

    def onednn(linear):
        weight = linear.weight.detach()
        scales = weight.abs().amax(dim=1) / 127
        packed = torch.ops.onednn.qlinear_prepack(torch.round(weight / scales[:, None]).to(torch.int8), None)
        zero_points = torch.zeros(weight.shape[0], dtype=torch.int32)

        def call(x):  # 7-bit activations, as fbgemm's: 8 bits saturate without VNNI
            low, high = x.min().clamp(max=0), x.max().clamp(min=0)
            scale = float((high - low) / 127)
            zero_point = int(torch.round(-low / scale))
            qx = torch.clamp(torch.round(x / scale) + zero_point, 0, 127).to(torch.uint8)
            return torch.ops.onednn.qlinear_pointwise(qx, scale, zero_point, packed, scales, zero_points,
                                                      linear.bias, 1.0, 0, torch.float32, "none", [], "")
        return call

    def weight_int8pack(linear):
        weight = linear.weight.detach()
        scales = weight.abs().amax(dim=1) / 127
        int8 = torch.round(weight / scales[:, None]).to(torch.int8)
        return lambda x: torch.ops.aten._weight_int8pack_mm(x, int8, scales) + linear.bias

    candidates = {"fbgemm linear_dynamic": DynamicInt8Linear, "onednn qlinear": onednn,
                  "aten weight_int8pack_mm": weight_int8pack}
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        def torchao(config):
            def make(linear):
                quantized = copy.deepcopy(linear)
                quantize_(quantized, config())
                return quantized
            return make

        candidates["torchao int8 dynamic"] = torchao(Int8DynamicActivationInt8WeightConfig)
        candidates["torchao int8 weight-only"] = torchao(Int8WeightOnlyConfig)
    except ImportError:
        print("torchao is not installed: its kernels are left out")
    torch.manual_seed(0)
    for rows, d_in, d_out in ((1024, 768, 3072), (1024, 3072, 768), (4, 768, 768), (4, 768, 50265), (1, 768, 768),
                              (1, 768, 2304)):
        linear = torch.nn.Linear(d_in, d_out)
        torch.nn.init.normal_(linear.weight, std=0.02)
        x = torch.randn(rows, d_in)
        with torch.no_grad():
            expected = F.linear(x, linear.weight, linear.bias)
            results = []
            for name, make in candidates.items():
                call = make(linear)
                error = float((call(x) - expected).abs().max() / expected.abs().max())
                times = time_pair({"fp32": lambda: F.linear(x, linear.weight, linear.bias), "int8": lambda: call(x)},
                                  repeats)
                ratio = statistics.median(times["fp32"]) / statistics.median(times["int8"])
                results.append(f"{name} x{ratio:.2f} (err {error:.3f})")
        print(f"{rows} x {d_in} -> {d_out}: " + ", ".join(results))


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, quantized engine {torch.backends.quantized.engine}, "
          f"load average {_loadavg()}")
    if args.kernels:
        kernels(max(args.repeats, 5))
        return
    if not args.no_speed:
        speed(args)
    for init_std in [] if args.no_drift else args.init_std:
        print(f"drift, {args.drift_seeds} checkpoints with init_std {init_std} x {args.drift_inputs} inputs of "
              f"{args.drift_length} tokens, greedy {args.drift_new_tokens} tokens:")
        for name, (worst, agreement, identical, runs) in drift(args, init_std).items():
            print(f"  {name:<13} max relative logit error {worst:.4f}   greedy token agreement {agreement:6.1%}   "
                  f"identical sequences {identical}/{runs}")
    print(f"load average at the end {_loadavg()}")


if __name__ == "__main__":
    main()
