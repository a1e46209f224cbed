"""One decoder layer of generation's step in one call (``decoder_layer.c``), for float32 inference on the CPU.

``decoder_step._LayerStep`` runs a layer's step as torch operations: ~30 per layer, each small beside the
products that stream the layer's weights and cross-attention keys/values (those run in ``fewrow``). Their
dispatch, and the cold caches each meets after a product has pushed megabytes through them, were ~4 ms of a
22 ms greedy step at 4k tokens for led-base. ``LayerKernel`` runs the whole layer as one parallel region of
compiled code with the same products (``benchmarks/bench_generate.py`` times the step with and without it).

``LayerKernel.build`` returns None where the layer is not the plain BART/LED decoder layer the C code
computes (every projection an ``nn.Linear`` with a bias, ``nn.LayerNorm`` with weight and bias, a GELU (erf)
or ReLU activation, head size a multiple of 8, float32 on the CPU) or the kernels are not built; a call
returns None where a step cannot use it (autograd on, training mode's dropout, more than ``fewrow.MAX_ROWS``
rows, the kernels switched off). The caller then runs the torch operations: the same function.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import nn

from . import kernels

MAX_ROWS = kernels.FEWROW_MAX_ROWS
_GELU, _RELU = 0, 1  # decoder_layer.c's activations
_off = kernels.OffSwitch()
disabled = _off.off  # inside ``with disabled():`` the step runs its layers as torch operations (in-run baselines)
calls = {"layers": 0}  # layer steps the kernel ran (tests and benchmarks read it)


class _Layer(ctypes.Structure):
    """decoder_layer.c's ``decoder_layer``."""

    _fields_ = [(name, ctypes.c_void_p) for name in (
        "qkv_w", "qkv_b", "self_out_w", "self_out_b", "self_norm_w", "self_norm_b",
        "cross_q_w", "cross_q_b", "cross_out_w", "cross_out_b", "cross_norm_w", "cross_norm_b",
        "fc1_w", "fc1_b", "fc2_w", "fc2_b", "final_norm_w", "final_norm_b",
        "keys", "values", "cross_keys", "cross_values_t", "cross_mask",
    )] + [(name, ctypes.c_float) for name in ("self_norm_eps", "cross_norm_eps", "final_norm_eps")]


def _activation(layer) -> Optional[int]:
    from .model import _ACTIVATIONS  # (model imports generation, which imports this module's caller)

    if layer.activation_fn is _ACTIVATIONS["gelu"]:
        return _GELU
    if layer.activation_fn is _ACTIVATIONS["relu"]:
        return _RELU
    return None


def plain_linears(*modules: nn.Module) -> bool:
    """Whether every module is an ``nn.Linear`` with a bias (its weight and bias may be read directly; a
    subclass, a quantized or wrapped layer, is called instead)."""
    return all(type(module) is nn.Linear and module.bias is not None for module in modules)


def _norm_ok(norm: nn.Module, d: int) -> bool:
    return (type(norm) is nn.LayerNorm and tuple(norm.normalized_shape) == (d,) and norm.weight is not None
            and norm.bias is not None)


class LayerKernel:
    """``decoder_layer_step`` for one decoder layer (``layer``: ``LEDDecoderLayer``) with its fused q/k/v
    projection (``qkv_weight``, ``qkv_bias``; held by the caller). ``tensors``: its weights in the order of
    the C struct's first fields."""

    def __init__(self, layer, tensors, activation: int):
        self.layer = layer
        self.activation = activation
        self.d = layer.self_attn.num_heads * layer.self_attn.head_dim
        self.heads = layer.self_attn.num_heads
        self.ffn = layer.fc1.out_features
        self.tensors = tensors  # the struct holds their addresses
        self.struct = _Layer(*(t.data_ptr() for t in tensors))
        self.struct.self_norm_eps = layer.self_attn_layer_norm.eps
        self.struct.cross_norm_eps = layer.encoder_attn_layer_norm.eps
        self.struct.final_norm_eps = layer.final_layer_norm.eps

    @classmethod
    def build(cls, layer, qkv_weight: Optional[torch.Tensor], qkv_bias: Optional[torch.Tensor]) -> Optional["LayerKernel"]:
        """The kernel of ``layer``, or None where decoder_layer.c does not compute this layer."""
        if qkv_weight is None or qkv_bias is None:
            return None
        d = qkv_weight.shape[1]
        self_attn, cross = layer.self_attn, layer.encoder_attn
        linears = (self_attn.out_proj, cross.q_proj, cross.out_proj, layer.fc1, layer.fc2)
        norms = (layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm)
        if (not plain_linears(*linears) or not all(_norm_ok(norm, d) for norm in norms)
                or self_attn.num_heads * self_attn.head_dim != d or self_attn.head_dim % 8 or self_attn.head_dim > 1024
                or cross.num_heads != self_attn.num_heads):
            return None
        activation = _activation(layer)
        in_struct_order = (self_attn.out_proj, layer.self_attn_layer_norm, cross.q_proj, cross.out_proj,
                           layer.encoder_attn_layer_norm, layer.fc1, layer.fc2, layer.final_layer_norm)
        tensors = (qkv_weight, qkv_bias) + tuple(t for module in in_struct_order for t in (module.weight, module.bias))
        if activation is None or not kernels.usable(*tensors) or kernels.library() is None:
            return None
        return cls(layer, tensors, activation)

    def __call__(self, hidden: torch.Tensor, position: int, keys: torch.Tensor, values: torch.Tensor,
                 cross_keys: torch.Tensor, cross_values_t: torch.Tensor, cross_mask: Optional[torch.Tensor],
                 group: int, work: "Scratch") -> Optional[torch.Tensor]:
        """The layer's output for ``hidden`` (rows, d) at ``position``, writing that position of the
        self-attention cache ``keys``/``values`` (rows, H, P, D); cross keys (inputs, H, S, D), values
        transposed (inputs, H, D, S), ``cross_mask`` additive (inputs, 1, 1, S) or None. None where the
        kernel cannot run this call (nothing is written then)."""
        rows = hidden.shape[0]
        lib = kernels.library()
        if (_off or lib is None or torch.is_grad_enabled() or self.layer.training or not 1 <= rows <= MAX_ROWS
                or not 1 <= group <= MAX_ROWS or rows % group
                or not kernels.usable(hidden, keys, values, cross_keys, cross_values_t)
                or (cross_mask is not None and not kernels.usable(cross_mask))):
            return None
        positions, length = keys.shape[2], cross_keys.shape[2]
        out = hidden.contiguous().clone()
        struct = self.struct
        struct.keys, struct.values = keys.data_ptr(), values.data_ptr()
        struct.cross_keys, struct.cross_values_t = cross_keys.data_ptr(), cross_values_t.data_ptr()
        struct.cross_mask = None if cross_mask is None else cross_mask.data_ptr()
        scratch = work.floats(lib.decoder_layer_work_floats(rows, self.d, self.heads, self.ffn, positions, length))
        with kernels.profiled(lambda: f"decoder_layer rows={rows} group={group} S={length}"):
            status = lib.decoder_layer_step(ctypes.byref(struct), out.data_ptr(), rows, group, self.d, self.heads,
                                            self.ffn, positions, position, length, self.activation,
                                            scratch.data_ptr(), torch.get_num_threads())
        if status != 0:  # (build and the checks above exclude every case the C code refuses)
            raise ValueError(f"decoder_layer_step refused rows={rows}, group={group}, position={position} of "
                             f"{positions}")
        calls["layers"] += 1
        return out


class Scratch:
    """A float32 CPU buffer shared by a step's layers, grown when a call needs more."""

    def __init__(self):
        self.buffer = torch.empty(0)

    def floats(self, count: int) -> torch.Tensor:
        if self.buffer.numel() < count:
            self.buffer = torch.empty(count)
        return self.buffer
