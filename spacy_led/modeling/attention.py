"""Attention for LED: the encoder's sliding-window + global attention and the decoder's cached attention.

``dense_encoder_attention`` states what LED's encoder self-attention computes (as transformers'
``LEDEncoderSelfAttention`` does), plainly and in O(L²). ``LEDEncoderSelfAttention`` computes the same thing
with another formulation, built for long inputs, and is tested against it (tests/test_attention_kernel.py):

* Local part, blocked: queries are cut into blocks of ``w`` (the one-sided window); block ``b`` attends the
  ``3w`` keys around it plus the global tokens' keys, with an additive band mask. Every block is one batch
  entry of ``scaled_dot_product_attention`` (4-D tensors), so the fused CPU/GPU kernels do the work, memory
  grows linearly with the length and the input is only padded to a multiple of ``w``, not of the window.
  Sequences of at most ``3w`` tokens use one dense block. In float32 inference on the CPU the local part runs
  instead through ``band_attention`` (a compiled kernel that computes each query's band only, about twice as
  fast); the blocked SDPA path is what autograd, dropout, other dtypes, GPUs and exports use.
* Global rows: a global query attends all non-padding tokens through ``key_global`` / ``value_global``. With
  few global tokens the projections are folded into the query and the output instead of projecting every
  token: ``q·(Wk h + bk) = (Wkᵀq)·h + q·bk`` (the last term is one constant per row) and
  ``Σ p (Wv h + bv) = Wv (Σ p h) + bv``. That costs ``O(G·H·L·d)`` instead of two ``O(L·d²)`` passes.

``EncoderMaskLayout`` holds what the layers share (padding, global positions, band masks per window), built
once per forward pass. With ``output_attentions`` the kernel returns ``EncoderAttentionProbs``, the
probabilities in the shapes of the sparse pattern; ``transformers_attention_layout`` turns them into the
tensors transformers returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from . import band_attention


def _min_value(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).min


def dense_encoder_attention(
    query, key, value, query_global, key_global, value_global, attention_mask, global_attention_mask, one_sided
):
    """LED's encoder self-attention, written for reading rather than speed (O(L²) time and memory): the
    specification the fast kernel is tested against; the model never calls it.

    Projections (B, H, L, D); masks (B, L) as the model takes them. Returns the output (B, H, L, D) before the
    output projection and the probabilities (B, H, L, L), padding rows zero."""
    is_pad = attention_mask == 0
    is_global = (global_attention_mask != 0) & ~is_pad  # a padding token marked global stays padding
    positions = torch.arange(query.shape[2], device=query.device)
    in_window = (positions[:, None] - positions[None, :]).abs() <= one_sided  # (L, L)
    # Every query attends the normal tokens of its window and every global token, with the local projections.
    may_attend = (in_window & ~is_global[:, None, :]) | is_global[:, None, :]
    may_attend = (may_attend & ~is_pad[:, None, :])[:, None]  # (B, 1, L, L)
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    probs = torch.softmax(scores.float().masked_fill(~may_attend, -math.inf), dim=-1).to(query.dtype)
    out = probs @ value
    # A global token's own row attends every non-padding token, with the global projections.
    global_scores = query_global @ key_global.transpose(-1, -2) / math.sqrt(query.shape[-1])
    global_scores = global_scores.float().masked_fill(is_pad[:, None, None, :], -math.inf)
    global_probs = torch.softmax(global_scores, dim=-1).to(query.dtype)
    global_row = is_global[:, None, :, None]
    out = torch.where(global_row, global_probs @ value_global, out)
    probs = torch.where(global_row, global_probs, probs)
    padding_row = is_pad[:, None, :, None]
    return out.masked_fill(padding_row, 0.0), probs.masked_fill(padding_row, 0.0)


@dataclass
class EncoderAttentionProbs:
    """One encoder layer's attention probabilities in the shapes of its sparse pattern (never L x L).

    ``band`` (B, H, L, 2w + 1): what query i gives key i - w + r, through the local projections (0 where that
    key is outside the sequence, padding or global). ``to_global`` (B, H, L, G): what query i gives the g-th
    global token of its row, through the local projections. The rows of global tokens in these two are what
    the local pass computed there; their output comes from ``of_global`` (B, H, G, L): each global token's
    row over every token, through the global projections (None when no token is global)."""

    band: torch.Tensor
    to_global: torch.Tensor
    of_global: Optional[torch.Tensor]


@dataclass
class EncoderMaskLayout:
    """Padding and global-token bookkeeping for one encoder forward pass, shared by every layer.

    ``attention_mask`` (B, L): 1 for real tokens, 0 for padding. ``global_mask`` (B, L): 1 for tokens with
    global attention (a padding token marked global stays padding, as in the reference).
    """

    is_pad: torch.Tensor  # (B, L) bool
    is_global: torch.Tensor  # (B, L) bool, never True on padding
    global_index: torch.Tensor  # (B, G) long positions of the global tokens, 0 in unused slots
    global_slot_valid: torch.Tensor  # (B, G) bool
    num_global: int  # G: the most global tokens of any row
    _band_masks: Dict[Tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)
    _scratch: Dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, attention_mask: torch.Tensor, global_mask: Optional[torch.Tensor]) -> "EncoderMaskLayout":
        is_pad = attention_mask == 0
        if global_mask is None:
            is_global = torch.zeros_like(is_pad)
        else:
            is_global = (global_mask != 0) & ~is_pad
        counts = is_global.sum(dim=1)
        num_global = int(counts.max().item()) if is_global.numel() else 0
        batch = is_pad.shape[0]
        if num_global:
            # Stable sort puts the global positions first, in order of position.
            order = torch.sort((~is_global).to(torch.int8), dim=1, stable=True).indices[:, :num_global]
            slot_valid = torch.arange(num_global, device=is_pad.device)[None, :] < counts[:, None]
            global_index = torch.where(slot_valid, order, torch.zeros_like(order))
        else:
            global_index = torch.zeros(batch, 0, dtype=torch.long, device=is_pad.device)
            slot_valid = torch.zeros(batch, 0, dtype=torch.bool, device=is_pad.device)
        return cls(is_pad, is_global, global_index, slot_valid, num_global)

    @property
    def has_global(self) -> bool:
        return self.num_global > 0

    def gather_global(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, G, ...): the rows of the global tokens (row 0 in unused slots)."""
        index = self.global_index.view(*self.global_index.shape, *([1] * (states.dim() - 2)))
        return torch.gather(states, 1, index.expand(-1, -1, *states.shape[2:]))

    def block_size(self, one_sided: int) -> int:
        """Query block length: one dense block for short inputs, else the one-sided window."""
        length = self.is_pad.shape[1]
        return length if length <= 3 * one_sided else one_sided

    def scratch(self, name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor named ``name`` that every layer of this forward pass reuses, for an intermediate that dies
        inside its layer (the query/key/value projections without autograd). At 16k tokens each is 50 MB: a
        fresh one per layer would be paged in afresh every time (mapped and zeroed by the kernel), a cost per
        token that short inputs, served from the allocator's reused memory, do not pay."""
        tensor = self._scratch.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(shape) or tensor.dtype != like.dtype or tensor.device != like.device:
            tensor = self._scratch[name] = like.new_empty(shape)
        return tensor

    def scratch_of(self, name: str, make) -> torch.Tensor:
        """``make()``, made once per forward pass and shared by every layer (a value that depends only on the
        masks, such as ``band_attention``'s byte masks)."""
        tensor = self._scratch.get(name)
        if tensor is None:
            tensor = self._scratch[name] = make().contiguous()
        return tensor

    def band_mask(self, one_sided: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (B*nb, 1, c, S) for the blocked layout of window ``one_sided``: 0 where query i may
        attend key j (|i-j| <= w, j a normal token; or j a global token), the dtype's minimum elsewhere."""
        key = (one_sided, dtype)
        if key not in self._band_masks:
            self._band_masks[key] = self._make_band_mask(one_sided, dtype)
        return self._band_masks[key]

    def band_mask_blocks(self, one_sided: int, dtype: torch.dtype, first: int, end: int) -> torch.Tensor:
        """``band_mask`` of query blocks ``first``..``end - 1`` of every row: (B*(end-first), 1, c, S).

        With autograd (training, where the attention runs chunk by chunk only under gradient checkpointing) a
        part is built when asked, forward and again in backward's recompute, instead of keeping the whole
        sequence's mask for the step (100 MB at 16k tokens, alive at the step's peak); without autograd every
        layer reads the one cached mask."""
        n_blocks = -(-self.is_pad.shape[1] // self.block_size(one_sided))
        if torch.is_grad_enabled() and (one_sided, dtype) not in self._band_masks and (first, end) != (0, n_blocks):
            return self._make_band_mask(one_sided, dtype, first, end)
        mask = self.band_mask(one_sided, dtype)
        batch = self.is_pad.shape[0]
        per_row = mask.view(batch, -1, *mask.shape[1:])
        if first == 0 and end == per_row.shape[1]:
            return mask
        return per_row[:, first:end].reshape(-1, *mask.shape[1:])  # a view for batch 1

    def _make_band_mask(self, one_sided: int, dtype: torch.dtype, first: int = 0, end: Optional[int] = None) -> torch.Tensor:
        """``band_mask``, or its query blocks ``first``..``end - 1``."""
        batch, length = self.is_pad.shape
        device = self.is_pad.device
        block = self.block_size(one_sided)
        end = -(-length // block) if end is None else end
        n_blocks = end - first
        normal = ~(self.is_pad | self.is_global)  # keys the local band may use
        if block == length:  # one dense block: keys are the sequence itself
            positions = torch.arange(length, device=device)
            band = (positions[:, None] - positions[None, :]).abs() <= one_sided  # (L, L)
            allowed = band[None] & normal[:, None, :]  # (B, L, L)
            allowed = allowed[:, None]  # (B, 1, c, S)
        else:
            span = block + 2 * one_sided
            q_local = torch.arange(block, device=device)
            k_local = torch.arange(span, device=device)
            band = (k_local[None, :] >= q_local[:, None]) & (k_local[None, :] <= q_local[:, None] + 2 * one_sided)
            padded = F.pad(normal, (one_sided, end * block + one_sided - length), value=False)
            key_ok = padded[:, first * block :].unfold(1, span, block)  # (B, nb, span)
            allowed = band[None, None] & key_ok[:, :, None, :]  # (B, nb, c, span)
            allowed = allowed.reshape(batch * n_blocks, 1, block, span)
        if self.num_global:
            glob = self.global_slot_valid[:, None, None, :].expand(batch, n_blocks, block, self.num_global)
            glob = glob.reshape(batch * n_blocks, 1, block, self.num_global)
            allowed = torch.cat([allowed, glob], dim=-1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill_(~allowed, _min_value(dtype))


class LEDEncoderSelfAttention(nn.Module):
    """Longformer self-attention with HuggingFace's parameter names (``longformer_self_attn.*``)."""

    def __init__(self, d_model: int, num_heads: int, attention_window: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.embed_dim = d_model
        self.one_sided_attn_window_size = attention_window // 2
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.query_global = nn.Linear(d_model, d_model)
        self.key_global = nn.Linear(d_model, d_model)
        self.value_global = nn.Linear(d_model, d_model)

    def forward(
        self, hidden_states: torch.Tensor, layout: EncoderMaskLayout, output_attentions: bool = False
    ) -> Tuple[torch.Tensor, Optional[EncoderAttentionProbs]]:
        """Output (B, L, H*D) before the output projection, and the probabilities if ``output_attentions``."""
        batch, length, _ = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self._project(self.query, hidden_states, layout, "query").view(batch, length, heads, head_dim)
        k = self._project(self.key, hidden_states, layout, "key").view(batch, length, heads, head_dim)
        v = self._project(self.value, hidden_states, layout, "value").view(batch, length, heads, head_dim)
        dropout = self.dropout if self.training else 0.0

        if output_attentions:
            out, band, to_global = self._local_attention_explicit(q, k, v, layout, dropout)
        else:
            out = self._local_attention(q, k, v, layout, dropout)

        of_global = None
        if layout.has_global:
            global_out, of_global = self._global_rows(hidden_states, layout, dropout, output_attentions)
            rows = layout.global_slot_valid
            batch_index = torch.arange(batch, device=out.device)[:, None].expand_as(rows)[rows]
            indices = (batch_index, layout.global_index[rows])
            if torch.is_grad_enabled():
                out = out.index_put(indices, global_out[rows])
            else:  # no graph keeps ``out``: no copy of it
                out.index_put_(indices, global_out[rows])
        padding = layout.is_pad[:, :, None]
        out = out.masked_fill(padding, 0.0) if torch.is_grad_enabled() else out.masked_fill_(padding, 0.0)
        if not output_attentions:
            return out, None
        return out, EncoderAttentionProbs(band, to_global, of_global)

    @staticmethod
    def _project(linear: nn.Module, states: torch.Tensor, layout: EncoderMaskLayout, name: str) -> torch.Tensor:
        """``linear(states)``; without autograd written into ``layout``'s scratch tensor ``name`` (the same
        product: ``F.linear`` is this ``addmm`` on the flattened tokens)."""
        if (torch.is_grad_enabled() or torch.jit.is_tracing() or type(linear) is not nn.Linear
                or linear.bias is None or not states.is_contiguous()):
            return linear(states)
        flat = states.view(-1, states.shape[-1])
        out = layout.scratch(name, (flat.shape[0], linear.out_features), states)
        return torch.addmm(linear.bias, flat, linear.weight.t(), out=out).view(*states.shape[:-1], -1)

    # ---- local (sliding window) part ------------------------------------------------------------------
    # Without autograd, and with gradient checkpointing, the local part runs over chunks of about this many
    # query tokens (whole blocks): the blocked copies of the keys and values and the mask slice of a chunk stay
    # small and cache-sized, so the cost per token does not grow with the length (with the whole sequence at
    # once, 16k tokens make ~400 MB of blocked copies per layer, freshly paged in every time). The numbers are
    # the same either way: every block is computed alone.
    chunk_tokens = 2048
    gradient_checkpointing = False  # set by the model's gradient_checkpointing_enable()

    def _blocked_keys(self, states: torch.Tensor, layout: EncoderMaskLayout, first: int, end: int) -> torch.Tensor:
        """(B, L, H, D) -> (B*nb, H, S, D): the keys (or values) of query blocks ``first``..``end - 1``, each
        block's window span followed by the global tokens' ones."""
        batch, length, heads, head_dim = states.shape
        w = self.one_sided_attn_window_size
        block = layout.block_size(w)
        if block == length:
            blocks = states.transpose(1, 2)[:, None]  # (B, 1, H, L, D)
        else:
            start, stop = first * block - w, end * block + w  # the span of the keys, padding included
            inside = states[:, max(start, 0) : min(stop, length)]
            padded = F.pad(inside, (0, 0, 0, 0, max(-start, 0), max(stop - length, 0)))
            blocks = padded.unfold(1, block + 2 * w, block).permute(0, 1, 2, 4, 3)  # (B, nb, H, S, D)
        if layout.has_global:
            glob = layout.gather_global(states).transpose(1, 2)[:, None]  # (B, 1, H, G, D)
            blocks = torch.cat([blocks, glob.expand(-1, blocks.shape[1], -1, -1, -1)], dim=3)
        return blocks.reshape(-1, heads, blocks.shape[3], head_dim)

    def _blocked_queries(self, q: torch.Tensor, layout: EncoderMaskLayout, first: int, end: int) -> torch.Tensor:
        batch, length, heads, head_dim = q.shape
        block = layout.block_size(self.one_sided_attn_window_size)
        q = q[:, first * block : end * block]
        q = F.pad(q, (0, 0, 0, 0, 0, (end - first) * block - q.shape[1]))
        return q.view(batch, end - first, block, heads, head_dim).transpose(2, 3).reshape(-1, heads, block, head_dim)

    def _unblock(self, out: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """(B*nb, H, c, D) -> (B, L, H*D)."""
        _, heads, block, head_dim = out.shape
        out = out.view(batch, -1, heads, block, head_dim).transpose(2, 3)
        return out.reshape(batch, -1, heads * head_dim)[:, :length]

    def _local_attention(self, q, k, v, layout: EncoderMaskLayout, dropout: float) -> torch.Tensor:
        """(B, L, H*D): the local part of every query: through ``band_attention`` where it applies (float32 CPU
        inference), else in chunks of blocks where that saves memory: without autograd (each chunk written into
        the output), and under gradient checkpointing in training (each chunk
        checkpointed: backward keeps only q, k, v and recomputes one chunk's blocked copies at a time)."""
        batch, length, heads, head_dim = q.shape
        block = layout.block_size(self.one_sided_attn_window_size)
        n_blocks = -(-length // block)
        chunk = max(1, self.chunk_tokens // block)
        if not torch.is_grad_enabled():
            out = band_attention.local_attention(q, k, v, layout, self.one_sided_attn_window_size, dropout)
            if out is not None:  # float32 on the CPU: each query's band only, in one compiled pass
                return out
            out = q.new_empty(batch, length, heads * head_dim)
            for first in range(0, n_blocks, chunk):
                out[:, first * block : (first + chunk) * block] = self._local_blocks(q, k, v, layout, dropout, first, chunk)
            return out
        if not (self.gradient_checkpointing and self.training) or chunk >= n_blocks:
            return self._local_blocks(q, k, v, layout, dropout, 0, n_blocks)
        pieces = [
            checkpoint(self._local_blocks, q, k, v, layout, dropout, first, chunk, use_reentrant=False)
            for first in range(0, n_blocks, chunk)
        ]
        return torch.cat(pieces, dim=1)

    def _local_blocks(self, q, k, v, layout: EncoderMaskLayout, dropout: float, first: int, count: int):
        """(B, rows, H*D): the local part of the queries of blocks ``first``..``first + count - 1`` (fewer at the
        end of the sequence)."""
        batch, length = q.shape[:2]
        w = self.one_sided_attn_window_size
        block = layout.block_size(w)
        end = min(first + count, -(-length // block))
        blocked = F.scaled_dot_product_attention(
            self._blocked_queries(q, layout, first, end),
            self._blocked_keys(k, layout, first, end),
            self._blocked_keys(v, layout, first, end),
            attn_mask=layout.band_mask_blocks(w, q.dtype, first, end),
            dropout_p=dropout,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        return self._unblock(blocked, batch, min(end * block, length) - first * block)

    def _local_attention_explicit(self, q, k, v, layout: EncoderMaskLayout, dropout: float):
        """``_local_attention`` with the probabilities materialised, for ``output_attentions``. Returns the
        output and the probabilities as ``EncoderAttentionProbs``' ``band`` and ``to_global``."""
        batch, length, heads, head_dim = q.shape
        w = self.one_sided_attn_window_size
        n_blocks = -(-length // layout.block_size(w))
        queries = self._blocked_queries(q, layout, 0, n_blocks) / math.sqrt(head_dim)
        scores = queries @ self._blocked_keys(k, layout, 0, n_blocks).transpose(-1, -2)
        scores = scores + layout.band_mask(w, scores.dtype)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = F.dropout(probs, dropout, self.training) @ self._blocked_keys(v, layout, 0, n_blocks)
        out = self._unblock(out, batch, length)

        # A block's keys are its window span (the whole sequence for one dense block), then the global keys.
        # Query a of a block finds its relative key r (key a + r - w of the sequence) at a + r - w + shift.
        block = queries.shape[2]
        band_width = probs.shape[-1] - layout.num_global
        shift = 0 if block == length else w
        a = torch.arange(block, device=q.device)[:, None]
        r = torch.arange(2 * w + 1, device=q.device)[None, :]
        key_pos = a + r - w + shift  # (c, 2w+1)
        valid = (key_pos >= 0) & (key_pos < band_width)
        band = torch.gather(
            probs[..., :band_width], -1, key_pos.clamp(0, band_width - 1).expand(*probs.shape[:2], -1, -1)
        ).masked_fill(~valid, 0.0)
        return out, self._rows_by_head(band, batch, length), self._rows_by_head(probs[..., band_width:], batch, length)

    @staticmethod
    def _rows_by_head(blocked: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """(B*nb, H, c, X) per-block rows -> (B, H, L, X)."""
        entries, heads, block, width = blocked.shape
        n_blocks = entries // batch
        rows = blocked.view(batch, n_blocks, heads, block, width).transpose(1, 2)
        return rows.reshape(batch, heads, n_blocks * block, width)[:, :, :length]

    # ---- global rows -----------------------------------------------------------------------------------
    def folds_global_projections(self, num_global: int) -> bool:
        """Whether the global rows fold key_global/value_global into the queries and outputs (see the module
        docstring): cheaper while the folded queries (G x H of them) are fewer than the model width."""
        return num_global * self.num_heads < self.embed_dim

    def _global_rows(self, hidden_states, layout: EncoderMaskLayout, dropout: float, output_attentions: bool):
        """Outputs (B, G, H*D) of the global tokens' rows, and their probabilities (B, H, G, L) if asked."""
        batch, length, d_model = hidden_states.shape
        heads, head_dim, n_global = self.num_heads, self.head_dim, layout.num_global
        q = self.query_global(layout.gather_global(hidden_states)).view(batch, n_global, heads, head_dim)
        q = q / math.sqrt(head_dim)
        key_mask = torch.zeros(batch, 1, length, dtype=hidden_states.dtype, device=hidden_states.device)
        key_mask = key_mask.masked_fill(layout.is_pad[:, None, :], _min_value(hidden_states.dtype))

        if self.folds_global_projections(n_global):
            w_k = self.key_global.weight.view(heads, head_dim, d_model)
            q_folded = torch.einsum("bghe,hed->bhgd", q, w_k).reshape(batch, heads * n_global, d_model)
            # q·bk is one constant per row and cancels in the softmax; it is added all the same so that
            # key_global.bias gets the reference's (zero) gradient rather than None, which DDP's gradient
            # reducer and optimizers' weight decay rely on.
            key_bias = torch.einsum("bghe,he->bhg", q, self.key_global.bias.view(heads, head_dim))
            key_bias = key_bias.reshape(batch, heads * n_global, 1)
            scores = torch.baddbmm(key_bias, q_folded, hidden_states.transpose(1, 2)) + key_mask  # (B, H*G, L)
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(hidden_states.dtype)
            context = torch.bmm(F.dropout(probs, dropout, self.training), hidden_states)  # (B, H*G, d)
            w_v = self.value_global.weight.view(heads, head_dim, d_model)
            out = torch.einsum("bhgd,hed->bghe", context.view(batch, heads, n_global, d_model), w_v)
            out = out + self.value_global.bias.view(heads, head_dim)
            out = out.reshape(batch, n_global, heads * head_dim)
            probs = probs.view(batch, heads, n_global, length)
        else:  # many global tokens: projecting every token once is cheaper
            k = self.key_global(hidden_states).view(batch, length, heads, head_dim).transpose(1, 2)
            v = self.value_global(hidden_states).view(batch, length, heads, head_dim).transpose(1, 2)
            q = q.transpose(1, 2)
            if output_attentions:
                scores = q @ k.transpose(-1, -2) + key_mask[:, None]
                probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(hidden_states.dtype)
                out = F.dropout(probs, dropout, self.training) @ v
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None], dropout_p=dropout, scale=1.0)
                probs = None
            out = out.transpose(1, 2).reshape(batch, n_global, heads * head_dim)
        return out, (probs if output_attentions else None)


class LEDEncoderAttention(nn.Module):
    """HuggingFace's ``self_attn`` of an encoder layer: the Longformer attention plus its output projection.
    Only a container of the two, for the parameter names: the layer applies them itself, so that it can run the
    projection with the rest of its per-token work, in chunks (``LEDEncoderLayer``)."""

    def __init__(self, d_model: int, num_heads: int, attention_window: int, dropout: float):
        super().__init__()
        self.longformer_self_attn = LEDEncoderSelfAttention(d_model, num_heads, attention_window, dropout)
        self.output = nn.Linear(d_model, d_model)


def transformers_attention_layout(
    probs: EncoderAttentionProbs, layout: EncoderMaskLayout, largest_window: int
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One layer's probabilities as transformers returns them (``largest_window``: the largest two-sided
    ``attention_window`` of the model).

    ``attentions`` (B, H, L, G + 2w + 1): the global columns first, then the band; the rows of global and
    padding tokens are zero (the global rows are in the other tensor). ``global_attentions`` (B, H, L_padded,
    G), or None without global tokens: padded to a multiple of ``largest_window``, as transformers pads its
    input, and unused global slots hold the uniform row its masked softmax gives there."""
    local = torch.cat([probs.to_global, probs.band], dim=-1)
    local = local.masked_fill((layout.is_pad | layout.is_global)[:, None, :, None], 0.0)
    if probs.of_global is None:
        return local, None
    length = probs.of_global.shape[-1]
    padded_length = -(-length // largest_window) * largest_window
    of_global = F.pad(probs.of_global, (0, padded_length - length))
    of_global = of_global.masked_fill(~layout.global_slot_valid[:, None, :, None], 1.0 / padded_length)
    return local, of_global.transpose(2, 3)


class DecoderAttention(nn.Module):
    """BART attention (decoder self-attention or cross-attention) with HuggingFace's parameter names."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def project_kv(self, states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) -> keys and values (B, H, T, D)."""
        batch, length, _ = states.shape
        k = self.k_proj(states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        return k, v

    def forward(
        self,
        hidden_states: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: Optional[torch.Tensor],
        group: int = 1,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Attend ``key``/``value`` (B/group, H, S, D) from ``hidden_states`` (B, T, d).

        ``group`` > 1 lets ``group`` consecutive rows (the beams of one input) share one set of keys: their
        queries are stacked along the time axis, so cross-attention keys are never copied per beam.
        ``mask`` is additive, broadcastable to (B/group, 1 or H, group*T, S).
        """
        batch, length, d_model = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q_proj(hidden_states) * head_dim**-0.5
        q = q.view(batch // group, group * length, heads, head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = q @ key.transpose(-1, -2)
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            out = F.dropout(probs, dropout, self.training) @ value
            probs = probs.view(batch // group, heads, group, length, -1).transpose(1, 2).reshape(batch, heads, length, -1)
        else:
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, dropout_p=dropout, scale=1.0)
            probs = None
        out = out.transpose(1, 2).reshape(batch, length, d_model)
        return self.out_proj(out), probs
