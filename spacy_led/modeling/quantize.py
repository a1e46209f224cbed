"""Dynamic int8 quantization of an LED's Linear layers for CPU inference (the ``quantize = "int8"`` setting).

Each ``nn.Linear`` becomes a :class:`DynamicInt8Linear`: its weight is stored once as int8 with one scale per
output row (symmetric, max |w| / 127), and at every call the activations are quantized on the fly (one scale per
call, from their range) and multiplied in integers. Embeddings, layer norms and attention itself stay float32.

Why this kernel. ``torch.ao.quantization`` (``quantize_dynamic``) is deprecated in torch 2.13, and its successor
torchao (0.18) was the first choice: it imports and runs with torch 2.13 on the CPU, but its CPU int8 paths are
slow in eager mode on this project's CPU (AMD EPYC, AVX2, no VNNI). ``benchmarks/bench_int8.py --kernels``
compares the candidates with float32 ``F.linear`` in one run, on led-base's shapes (2 threads; speed-up, > 1 is
faster): torchao's ``Int8DynamicActivationInt8WeightConfig`` 0.04x on an encoder batch and 0.5x on a decoder
step (it multiplies through ``torch._int_mm``, a plain loop on such a CPU), its ``Int8WeightOnlyConfig``
0.3-0.9x, ``aten._weight_int8pack_mm`` 0.02-1.2x, oneDNN's ``onednn::qlinear_pointwise`` (Inductor's x86 int8
op) 0.6-1.6x, and fbgemm's ``quantized::linear_dynamic`` (the op torch.ao's dynamic Linear called, in every
CPU build of torch) 1.6-1.7x on the encoder's products, 1.0x on a 768 x 768 step product and 8.7x on the
768 x 50,265 output layer (a step reads the weights, and int8 weights are a quarter of the bytes). So the layer
here calls fbgemm's op directly, without ``torch.ao``. Its packed weight is built from a ``qint8`` tensor, whose
creation functions torch 2.13 marks deprecated; that is the one place to change (``_pack``) when torch drops
them.

Quantized copies share every float parameter with the model they are made from (no second copy of the
embeddings), so the float model stays what is trained and saved.
"""
from __future__ import annotations

import copy
import warnings
from typing import Iterable, Optional, Tuple

import torch
from torch import nn

QUANTIZE_MODES = ("int8",)

# Linear layers whose float weight the model reads directly, not only through calling the layer: the encoder's
# global key/value projections are folded into the global queries (``LEDEncoderSelfAttention._global_rows``).
KEEP_FLOAT = ("key_global", "value_global")


def check_quantize(mode: Optional[str]) -> Optional[str]:
    """``mode`` if it is a supported quantization (or None, float weights as stored); otherwise a ValueError
    saying what is supported."""
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(
            f"quantize={mode!r} is not supported: use 'int8' (dynamic int8 Linear layers, CPU inference) or "
            f"leave it unset (null) to run the float weights as stored."
        )
    return mode


def _pack(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, object]:
    """The int8 weight, its per-row scales and fbgemm's packed form of both (with the float bias)."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    int8_weight = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # qint8 tensors are deprecated in torch 2.13; fbgemm's packing still takes one (see the module docstring).
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qweight = torch._make_per_channel_quantized_tensor(int8_weight, scales.double(), zero_points, 0)
    packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())
    return int8_weight, scales, packed


class DynamicInt8Linear(nn.Module):
    """``nn.Linear`` with an int8 weight (per output row scales) and activations quantized per call."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise ValueError(f"int8 quantization runs on the CPU; this layer is on {linear.weight.device}.")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        int8_weight, scales, self._packed = _pack(linear.weight, linear.bias)
        # The int8 weight and scales the packed form holds, kept as plain buffers so they can be inspected.
        self.register_buffer("int8_weight", int8_weight, persistent=False)
        self.register_buffer("weight_scale", scales, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"DynamicInt8Linear takes float32 inputs; got {x.dtype}.")
        # reduce_range=True: 7-bit activations, so that u8 x s8 products summed in pairs cannot saturate 16 bits
        # on CPUs without VNNI (fbgemm's AVX2 kernel).
        return torch.ops.quantized.linear_dynamic(x, self._packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight, dynamic activations"


def _linear_layers(module: nn.Module) -> Iterable[Tuple[nn.Module, str, nn.Linear]]:
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Linear and name not in KEEP_FLOAT:
                yield parent, name, child


def quantize_dynamic_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for inference whose Linear layers (but ``KEEP_FLOAT``) are :class:`DynamicInt8Linear`;
    ``module`` is not changed, and the copy shares its other parameters. Float32 CPU models only."""
    parameters = list(module.parameters()) + list(module.buffers())
    dtypes = {p.dtype for p in parameters if p.is_floating_point()}
    devices = {p.device.type for p in parameters}
    if dtypes - {torch.float32} or devices - {"cpu"}:
        raise ValueError(
            f"int8 quantization needs a float32 model on the CPU; this one is {sorted(map(str, dtypes))} on "
            f"{sorted(devices)}. Use dtype = \"float32\" and no GPU, or leave quantize unset."
        )
    shared = {id(p): p for p in parameters}  # deepcopy's memo: every tensor is shared, only modules are copied
    quantized = copy.deepcopy(module, memo=shared)
    for parent, name, linear in list(_linear_layers(quantized)):
        setattr(parent, name, DynamicInt8Linear(linear))
    return quantized.eval()
