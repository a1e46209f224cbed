"""One decoder step of generation, organised for its floor: reading the weights and the cross-attention
keys/values once per step.

``LEDDecoder.forward`` with a ``DecoderCache`` is the general path (any number of new tokens, attention
outputs, training). Generation feeds one token per row per step, where that path's cost is not arithmetic
but memory traffic and many small operations; ``DecoderStep`` computes the same function of the same weights
(transformers' cache semantics: each step attends every earlier token of its own beam, and the encoder output)
with

- a static self-attention cache: keys/values for every position up to ``max_length`` are preallocated per
  layer and each step writes its own position in place (no ``torch.cat`` per step); a beam reorder copies
  only the positions written so far, and nothing when every beam keeps its own parent;
- the self-attention query/key/value projections fused into one matrix product (the fused matrix is built
  from the layer's own ``q_proj``/``k_proj``/``v_proj`` when the step is created, so the state dict and
  checkpoints are unchanged);
- cross-attention keys/values computed once per input and shared by that input's beams (``group`` rows, whose
  queries are stacked), attended through ``fewrow`` on the CPU where it runs (below), else with
  ``scaled_dot_product_attention``: one parallel kernel for all heads (batched matrix products run one
  parallel region per head, which costs far more when threads wait for cores); on a GPU as product, softmax,
  product (see ``_attend``);
- on the CPU, float32 products of 1-8 rows (linear layers, and cross-attention's queries x keys and
  probabilities x values, with the values cached transposed) run in ``fewrow`` (compiled loops that read a
  weight at close to the memory bandwidth, where MKL reaches about half of it for so few rows); where that
  library cannot be used, or for more rows, products of 2..FEW_ROWS rows run as ``W @ x^T``: with MKL on
  this machine's CPU the product ``x @ W^T`` that ``nn.Linear`` computes reads the weight 2-3x slower for
  2-32 rows than the same product the other way round (one row is a matrix-vector product either way and
  stays ``nn.Linear``); the bias is added in the pass that transposes the result back into rows;
- on the CPU in float32 inference, each layer of 1-8 rows runs in one compiled call (``decoder_layer``: the
  same products, attention, norms and activation in one parallel region, without ~30 operations' dispatch per
  layer); the operations below are the same function, for every case it does not take;
- for greedy search, ``greedy_tokens``: the next token through an int8 copy of the LM head with a proven
  error bound, and the float32 logits of the few tokens the bound cannot rule out (``greedy_head``): the
  full product's token, reading a quarter of the head's bytes.

A layer that is not a plain ``nn.Linear`` (a quantized one, say) is simply called, so this stays correct
whatever replaced it.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from . import fewrow, greedy_head
from .decoder_layer import LayerKernel, Scratch, plain_linears

# Up to this many rows a linear layer on the CPU runs as W @ x^T (see the module docstring); more rows are a
# real matrix product, where nn.Linear's own kernel is the better one.
FEW_ROWS = 32


def _matmul_weight(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for x (rows, in), with the weight-streaming product for few rows."""
    if x.device.type != "cpu":
        return F.linear(x, weight, bias)
    out = fewrow.linear(x, weight, bias)
    if out is not None:
        return out
    if not 1 < x.shape[0] <= FEW_ROWS:
        return F.linear(x, weight, bias)
    out = torch.mm(weight, x.t())  # (out, rows)
    if bias is None:
        return out.t().contiguous()
    # The bias is added while the result is transposed into rows: one pass, where addmm would first copy the
    # broadcast bias into its output and then the output would be copied once more (the LM head's 50,265 x
    # rows result costs ~0.6 ms less per step with 4 beams).
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return (out.t() + bias).contiguous()  # autograd takes no out= argument
    return torch.add(out.t(), bias, out=x.new_empty((x.shape[0], weight.shape[0])))


def _attend_fewrow(q: torch.Tensor, keys: torch.Tensor, values_t: torch.Tensor,
                   mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Cross-attention of a step through ``fewrow``: q (inputs, H, group, D) already scaled, keys (inputs, H,
    S, D), values_t (inputs, H, D, S); None where the library cannot do it (the caller attends otherwise)."""
    scores = fewrow.batched_products(q, keys)  # (inputs, H, group, S)
    if scores is None:
        return None
    if mask is not None:
        scores += mask
    return fewrow.batched_products(torch.softmax(scores, dim=-1), values_t)  # (inputs, H, group, D)


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: Optional[torch.Tensor],
            dropout: float) -> torch.Tensor:
    """softmax(q k^T + mask) v of a step's few query rows (q is already scaled).

    On the CPU this is ``scaled_dot_product_attention``. On a GPU its float32 kernel (memory-efficient
    attention) parallelizes over blocks of queries, and a step has one block of 1-4 queries against up to 16k
    keys: on an H200 it took 84% of a 16k-token 4-beam ``generate``, and the plain products below made that
    whole ``generate`` 2.2x faster (benchmarks/bench_gpu.py); in bfloat16 both take the same time.
    """
    if q.device.type == "cpu" or dropout:
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=dropout, scale=1.0)
    return _explicit_attention(q, keys, values, mask)


def _explicit_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1.0)`` as two products, with the
    softmax in float32 (as transformers' eager attention upcasts it)."""
    scores = q @ keys.transpose(-1, -2)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype) @ values


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if type(module) is nn.Linear:
        return _matmul_weight(x, module.weight, module.bias)
    return module(x)


class _LayerStep:
    """One decoder layer's step weights and caches."""

    def __init__(self, layer, encoded: torch.Tensor, rows: int, positions: int, scratch: Scratch):
        attention = layer.self_attn
        self.layer = layer
        self.heads, self.head_dim = attention.num_heads, attention.head_dim
        self.scale = self.head_dim**-0.5
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        if plain_linears(*projections):
            self.qkv_weight = torch.cat([p.weight for p in projections])
            self.qkv_bias = torch.cat([p.bias for p in projections])
        else:
            self.qkv_weight = self.qkv_bias = None
        dtype, device = encoded.dtype, encoded.device
        shape = (rows, self.heads, positions, self.head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        cross = layer.encoder_attn
        batch, length, _ = encoded.shape
        flat = encoded.reshape(batch * length, -1)
        k = _linear(cross.k_proj, flat).view(batch, length, self.heads, self.head_dim)
        self.cross_keys = k.transpose(1, 2).contiguous()  # (inputs, H, S, D)
        # fewrow multiplies the probabilities by the values' rows of S: it keeps them (inputs, H, D, S)
        self.values_transposed = (encoded.device.type == "cpu" and dtype == torch.float32
                                  and rows // batch <= fewrow.MAX_ROWS and fewrow.library() is not None)
        if self.values_transposed and plain_linears(cross.v_proj) and not torch.is_grad_enabled():
            # W x^T + b is already (d, S) per input: no transposing copy of the values (12.6 MB per layer at
            # 4k, in cold memory); the same function as x W^T + b (tests/test_decoder_step.py compares them)
            values = encoded.new_empty((batch, self.heads * self.head_dim, length))
            for index in range(batch):
                torch.addmm(cross.v_proj.bias[:, None], cross.v_proj.weight, encoded[index].t(), out=values[index])
            self.cross_values = values.view(batch, self.heads, self.head_dim, length)
        else:
            v = _linear(cross.v_proj, flat).view(batch, length, self.heads, self.head_dim)
            self.cross_values = (v.permute(0, 2, 3, 1) if self.values_transposed else v.transpose(1, 2)).contiguous()
        # the whole layer in one compiled call where it applies (decoder_layer.py), else the operations below
        self.kernel = LayerKernel.build(layer, self.qkv_weight, self.qkv_bias) if self.values_transposed else None
        self.scratch = scratch

    def project_qkv(self, hidden: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attention = self.layer.self_attn
        if self.qkv_weight is None:
            return _linear(attention.q_proj, hidden), _linear(attention.k_proj, hidden), _linear(attention.v_proj, hidden)
        return _matmul_weight(hidden, self.qkv_weight, self.qkv_bias).chunk(3, dim=-1)

    def __call__(self, hidden: torch.Tensor, position: int, cross_mask: Optional[torch.Tensor], group: int):
        if self.kernel is not None:
            out = self.kernel(hidden, position, self.keys, self.values, self.cross_keys, self.cross_values,
                              cross_mask, group, self.scratch)
            if out is not None:
                return out
        layer = self.layer
        rows, d_model = hidden.shape
        heads, head_dim = self.heads, self.head_dim
        training = layer.training

        residual = hidden
        q, k, v = self.project_qkv(hidden)
        self.keys[:, :, position] = k.view(rows, heads, head_dim)
        self.values[:, :, position] = v.view(rows, heads, head_dim)
        q = (q * self.scale).reshape(rows, heads, 1, head_dim)
        keys = self.keys[:, :, : position + 1]
        values = self.values[:, :, : position + 1]
        dropout = layer.self_attn.dropout if training else 0.0
        attn = _attend(q, keys, values, None, dropout).view(rows, d_model)
        attn = _linear(layer.self_attn.out_proj, attn)
        hidden = layer.self_attn_layer_norm(residual + F.dropout(attn, layer.dropout, training))

        residual = hidden
        cross = layer.encoder_attn
        q = _linear(cross.q_proj, hidden) * self.scale
        inputs = rows // group
        q = q.view(inputs, group, heads, head_dim).transpose(1, 2)  # (inputs, H, group, D)
        dropout = cross.dropout if training else 0.0
        attn = None
        if self.values_transposed and not dropout:
            attn = _attend_fewrow(q.contiguous(), self.cross_keys, self.cross_values, cross_mask)
        if attn is None:
            values = self.cross_values.transpose(-1, -2) if self.values_transposed else self.cross_values
            attn = _attend(q, self.cross_keys, values, cross_mask, dropout)
        attn = attn.transpose(1, 2).reshape(rows, d_model)
        attn = _linear(cross.out_proj, attn)
        hidden = layer.encoder_attn_layer_norm(residual + F.dropout(attn, layer.dropout, training))

        residual = hidden
        hidden = layer.activation_fn(_linear(layer.fc1, hidden))
        hidden = F.dropout(hidden, layer.activation_dropout, training)
        hidden = F.dropout(_linear(layer.fc2, hidden), layer.dropout, training)
        return layer.final_layer_norm(residual + hidden)

    def reorder(self, parents: torch.Tensor, written: int) -> None:
        for cache in (self.keys, self.values):
            cache[:, :, :written] = cache[parents, :, :written]

    def keep_inputs(self, keep: torch.Tensor, rows: torch.Tensor) -> None:
        self.keys, self.values = self.keys[rows], self.values[rows]
        self.cross_keys = self.cross_keys.index_select(0, keep)
        self.cross_values = self.cross_values.index_select(0, keep)


class DecoderStep:
    """The decoder of ``model`` fed one token per row per step, for ``group`` rows per encoder row.

    ``encoded`` (inputs, S, d) and ``encoder_mask`` (inputs, S; 1 = real token) are the encoder's output;
    the decoder rows are ``group`` consecutive rows per input. ``max_positions`` bounds the number of steps
    (the decoder positions the caches hold).
    """

    def __init__(self, model, encoded: torch.Tensor, encoder_mask: Optional[torch.Tensor], group: int,
                 max_positions: int):
        decoder = model.led.decoder
        if max_positions > decoder.config.max_decoder_position_embeddings:
            raise ValueError(
                f"{max_positions} decoder positions asked for, but the decoder has only "
                f"{decoder.config.max_decoder_position_embeddings} (max_decoder_position_embeddings)."
            )
        self.model = model
        self.decoder = decoder
        self.group = group
        self.rows = encoded.shape[0] * group
        self.max_positions = max_positions
        self.position = 0  # the number of tokens fed so far
        dtype = encoded.dtype
        # Without padding the additive mask is all zeros: attention runs without one (the same function, one
        # tensor fewer to read per layer and step).
        self.cross_mask = None
        if encoder_mask is not None and not bool(encoder_mask.all()):
            additive = torch.zeros(encoder_mask.shape, dtype=dtype, device=encoded.device)
            self.cross_mask = additive.masked_fill(encoder_mask == 0, torch.finfo(dtype).min)[:, None, None, :]
        scratch = Scratch()  # the compiled layers' working memory, shared
        self.layers: List[_LayerStep] = [
            _LayerStep(layer, encoded, self.rows, max_positions, scratch) for layer in decoder.layers
        ]

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float32 next-token logits (rows, vocab) after feeding ``tokens`` (rows,)."""
        return self._head(self._hidden(tokens))

    def greedy_tokens(self, tokens: torch.Tensor, ban: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``ban(self.logits(tokens)).argmax(-1)`` for a ``ban`` that only sets scores to -inf: through the LM
        head's int8 copy where ``greedy_head`` can answer (the same tokens, fewer bytes read), else the same
        expression."""
        hidden = self._hidden(tokens)
        head = self._plain_head(hidden.dtype)
        if head is not None and hidden.dtype == torch.float32:
            found = greedy_head.argmax(hidden, *head, ban)
            if found is not None:
                return found.to(tokens.device)
        return ban(self._head(hidden)).argmax(dim=-1)

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last decoder layer's output (rows, d) after feeding ``tokens`` (rows,); advances the position."""
        if self.position >= self.max_positions:
            raise ValueError(f"the decoder step's caches hold {self.max_positions} positions; all are used.")
        decoder, position = self.decoder, self.position
        hidden = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[position]
        hidden = F.dropout(decoder.layernorm_embedding(hidden), decoder.config.dropout, decoder.training)
        for layer in self.layers:
            hidden = layer(hidden, position, self.cross_mask, self.group)
        self.position += 1
        return hidden

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self._plain_head(hidden.dtype)
        if head is not None:
            return _matmul_weight(hidden, *head).float()
        return self.model.logits(hidden).float()

    def _plain_head(self, dtype: torch.dtype) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The LM head's weight and its bias (``final_logits_bias``) in ``dtype`` when the head is a plain
        ``nn.Linear`` without a bias of its own, else None (a replaced head is called as it is)."""
        model = self.model
        if type(model.lm_head) is nn.Linear and model.lm_head.bias is None:
            return model.lm_head.weight, model.final_logits_bias[0].to(dtype)
        return None

    def reorder(self, parents: torch.Tensor) -> None:
        """Make row i continue row ``parents[i]`` (a beam-search step; each row stays in its own group)."""
        if torch.equal(parents, torch.arange(parents.numel(), device=parents.device)):
            return
        for layer in self.layers:
            layer.reorder(parents, self.position)

    def keep_inputs(self, keep: torch.Tensor) -> torch.Tensor:
        """Drop the inputs not in ``keep`` with their rows; returns the kept rows' indices."""
        offsets = torch.arange(self.group, device=keep.device)
        rows = (keep[:, None] * self.group + offsets).flatten()
        for layer in self.layers:
            layer.keep_inputs(keep, rows)
        if self.cross_mask is not None:
            self.cross_mask = self.cross_mask.index_select(0, keep)
        self.rows = rows.numel()
        return rows
