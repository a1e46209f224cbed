"""LED's encoder self-attention in a form ``torch.export`` can trace with a dynamic length and number of
global tokens: the computation of ``spacy_led.modeling.attention.LEDEncoderSelfAttention``, always on its
general path.

The model's kernel chooses between code paths in Python from the input's shape and contents (one dense block
for inputs of at most ``3w`` tokens, the blocked layout otherwise; folded or projected global rows from the
number of global tokens; no global pass without global tokens). An exported graph keeps only the branch its
example took, so here every input takes one path, whatever its length:

* the input is padded inside the graph to a multiple of ``w`` (the one-sided window), queries are cut into
  blocks of ``w`` and block ``b`` attends the ``3w`` keys around it plus the global tokens' keys, gathered by
  an index computed from the length (no ``unfold``, no shape-dependent branch);
* the number of global tokens ``G`` is read from the masks inside the graph (``G`` may be 0), and the global
  rows always fold ``key_global`` / ``value_global`` into the queries and outputs (the model does so whenever
  ``G x heads`` is below the model width, i.e. for every usual input);
* each global row's output is gathered back to its position instead of ``index_put``.

The result equals the model's kernel up to float rounding (tests/test_onnx.py compares them, and the exported
graphs, at lengths that are and are not window multiples, with 0, 1 and many global tokens and padding). The
projections are the model's own ``nn.Linear`` modules, so the export holds the checkpoint's weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.attention import LEDEncoderSelfAttention


@dataclass
class ExportLayout:
    """Padding and global tokens of one encoder pass (as the model's ``EncoderMaskLayout``), built from tensors
    only: ``num_global`` is a size read from the data, so the graph works for any number of global tokens."""

    is_pad: torch.Tensor  # (B, L) bool
    is_global: torch.Tensor  # (B, L) bool, never True on padding
    global_index: torch.Tensor  # (B, G) positions of each row's global tokens in order, 0 in unused slots
    global_slot_valid: torch.Tensor  # (B, G) bool
    slot_of_position: torch.Tensor  # (B, L) the global slot of each global token (0 elsewhere)

    @classmethod
    def build(cls, attention_mask: torch.Tensor, global_attention_mask: torch.Tensor) -> "ExportLayout":
        is_pad = attention_mask == 0
        is_global = (global_attention_mask != 0) & ~is_pad
        length = is_pad.shape[1]
        counts = is_global.sum(dim=1)
        positions = torch.arange(length, device=is_pad.device)
        # Global positions first, in order: their sort keys are their positions, the others' come after.
        order = torch.argsort(positions[None, :] + (~is_global).long() * length, dim=1)
        # G slots, G the most global tokens of a row: a size computed in the graph (arange of a tensor).
        slots = torch.arange(counts.max(), device=is_pad.device)
        slot_valid = slots[None, :] < counts[:, None]
        global_index = torch.where(slot_valid, order.index_select(1, slots), torch.zeros_like(slot_valid).long())
        slot_of_position = (is_global.long().cumsum(dim=1) - 1).clamp_min(0)
        return cls(is_pad, is_global, global_index, slot_valid, slot_of_position)

    def gather_global(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, G, ...): the rows of the global tokens (row 0 in unused slots)."""
        index = self.global_index.view(*self.global_index.shape, *([1] * (states.dim() - 2)))
        return torch.gather(states, 1, index.expand(-1, -1, *states.shape[2:]))


class ExportableEncoderSelfAttention(nn.Module):
    """Drop-in for ``LEDEncoderSelfAttention.forward`` (same arguments, an ``ExportLayout`` for the layout),
    sharing the wrapped module's projections."""

    def __init__(self, attention: LEDEncoderSelfAttention):
        super().__init__()
        self.attention = attention
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.window = attention.one_sided_attn_window_size

    def forward(self, hidden_states: torch.Tensor, layout: ExportLayout, output_attentions: bool = False):
        if output_attentions:
            raise ValueError("the exported encoder returns no attention probabilities (output_attentions).")
        attn = self.attention
        batch, length, _ = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = attn.query(hidden_states).view(batch, length, heads, head_dim)
        k = attn.key(hidden_states).view(batch, length, heads, head_dim)
        v = attn.value(hidden_states).view(batch, length, heads, head_dim)
        out = self._local_attention(q, k, v, layout)  # (B, L, H*D)
        global_out = self._global_rows(hidden_states, layout)  # (B, G, H*D)
        # Each global token's row comes from the global pass; one zero row keeps the gather valid when G = 0.
        global_out = torch.cat([global_out, global_out.new_zeros(batch, 1, global_out.shape[2])], dim=1)
        from_global = torch.gather(global_out, 1, layout.slot_of_position[:, :, None].expand(-1, -1, out.shape[2]))
        out = torch.where(layout.is_global[:, :, None], from_global, out)
        return out.masked_fill(layout.is_pad[:, :, None], 0.0), None

    def _local_attention(self, q, k, v, layout: ExportLayout) -> torch.Tensor:
        batch, length, heads, head_dim = q.shape
        w = self.window
        n_blocks = (length + w - 1) // w
        padded_length = n_blocks * w
        span = 3 * w
        # Key j of block b is position b*w - w + j, i.e. row b*w + j of the keys padded by w on each side.
        key_rows = (torch.arange(n_blocks, device=q.device)[:, None] * w + torch.arange(span, device=q.device)[None, :])

        def blocked(states):  # (B, L, H, D) -> (B*nb, H, 3w + G, D)
            padded = F.pad(states, (0, 0, 0, 0, w, padded_length - length + w))
            blocks = padded[:, key_rows]  # (B, nb, 3w, H, D)
            glob = layout.gather_global(states)[:, None].expand(-1, n_blocks, -1, -1, -1)  # (B, nb, G, H, D)
            blocks = torch.cat([blocks, glob], dim=2)
            return blocks.transpose(2, 3).reshape(batch * n_blocks, heads, -1, head_dim)

        queries = F.pad(q, (0, 0, 0, 0, 0, padded_length - length))
        queries = queries.view(batch, n_blocks, w, heads, head_dim).transpose(2, 3).reshape(-1, heads, w, head_dim)
        out = F.scaled_dot_product_attention(
            queries, blocked(k), blocked(v), attn_mask=self._band_mask(layout, n_blocks, q.dtype),
            scale=1.0 / math.sqrt(self.head_dim),
        )
        out = out.view(batch, n_blocks, heads, w, head_dim).transpose(2, 3)
        return out.reshape(batch, padded_length, heads * head_dim)[:, :length]

    def _band_mask(self, layout: ExportLayout, n_blocks, dtype: torch.dtype) -> torch.Tensor:
        """Additive (B*nb, 1, w, 3w + G): query a of a block may attend key j of its span if a <= j <= a + 2w
        and the key is a normal (not padding, not global) token, and every valid global slot."""
        w = self.window
        batch, length = layout.is_pad.shape
        device = layout.is_pad.device
        span = 3 * w
        q_local = torch.arange(w, device=device)
        k_local = torch.arange(span, device=device)
        band = (k_local[None, :] >= q_local[:, None]) & (k_local[None, :] <= q_local[:, None] + 2 * w)
        normal = ~(layout.is_pad | layout.is_global)
        padded = F.pad(normal, (w, n_blocks * w - length + w), value=False)
        key_rows = torch.arange(n_blocks, device=device)[:, None] * w + k_local[None, :]
        key_ok = padded[:, key_rows]  # (B, nb, 3w)
        allowed = band[None, None] & key_ok[:, :, None, :]  # (B, nb, w, 3w)
        glob = layout.global_slot_valid[:, None, None, :].expand(-1, n_blocks, w, -1)
        allowed = torch.cat([allowed, glob], dim=-1).reshape(batch * n_blocks, 1, w, -1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def _global_rows(self, hidden_states: torch.Tensor, layout: ExportLayout) -> torch.Tensor:
        """(B, G, H*D): each global token attends every non-padding token through the global projections,
        folded into the query (``q·(Wk h + bk) = (Wkᵀq)·h + q·bk``) and the output (``Wv (Σ p h) + bv``)."""
        attn = self.attention
        batch, length, d_model = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = attn.query_global(layout.gather_global(hidden_states))
        q = q.view(batch, -1, heads, head_dim) / math.sqrt(head_dim)  # (B, G, H, D)
        w_k = attn.key_global.weight.view(heads, head_dim, d_model)
        q_folded = torch.einsum("bghe,hed->bhgd", q, w_k).reshape(batch, -1, d_model)
        key_bias = torch.einsum("bghe,he->bhg", q, attn.key_global.bias.view(heads, head_dim))
        key_mask = torch.zeros(batch, 1, length, dtype=hidden_states.dtype, device=hidden_states.device)
        key_mask = key_mask.masked_fill(layout.is_pad[:, None, :], torch.finfo(hidden_states.dtype).min)
        scores = q_folded @ hidden_states.transpose(1, 2) + key_bias.reshape(batch, -1, 1) + key_mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(hidden_states.dtype)
        context = (probs @ hidden_states).view(batch, heads, -1, d_model)
        w_v = attn.value_global.weight.view(heads, head_dim, d_model)
        out = torch.einsum("bhgd,hed->bghe", context, w_v) + attn.value_global.bias.view(heads, head_dim)
        return out.reshape(batch, -1, heads * head_dim)
