"""The torch modules that are exported, one per ONNX graph, built around a loaded LED.

They call the model's own modules (embeddings, encoder and decoder layers, heads), so the graphs compute what
the model computes and follow its changes; only the encoder's self-attention kernel is replaced, by its
export-friendly formulation (``attention.py``), and the model's input checks (which read tensor values in
Python) are left to the runtime.

* ``EncoderGraph``: input_ids, attention_mask, global_attention_mask (B, L) -> hidden states (B, L, d).
* ``DecoderInitGraph``: the first decoder step of ``K`` rows per input (beams or samples, all starting with the
  decoder start token) and the cross-attention keys/values of every layer, computed once.
* ``DecoderStepGraph``: one more token per row, with the self-attention cache (past in, present out) and the
  cross-attention keys/values from the init graph.
* ``HeadGraph``: the decoder over the (shifted) input itself and the QA or classification head, as
  ``LEDForQuestionAnswering`` / ``LEDForSequenceClassification`` run it: logits for every position.

Decoder rows come in groups of ``K`` per input: ids are (B, K), caches (B, K, H, T, D). Inside, the rows are
(B*K, ...) and the layers' ``group`` argument lets the ``K`` rows of an input share its cross-attention
keys/values, as ``generate`` does, so the encoder output is never copied per beam.
"""
from __future__ import annotations

import copy
from typing import List, Tuple

import torch
from torch import nn

from ..modeling.model import DecoderCache, LEDEncoderLayer
from .attention import ExportableEncoderSelfAttention, ExportLayout


def _with_exportable_attention(layer: LEDEncoderLayer) -> nn.Module:
    """A shallow copy of an encoder layer whose self-attention kernel is the exportable one (same weights):
    the layer's own ``forward`` (residuals, norms, feed-forward) runs unchanged. The model is not modified."""
    attention_block = copy.copy(layer.self_attn)
    attention_block._modules = dict(layer.self_attn._modules)
    attention_block._modules["longformer_self_attn"] = ExportableEncoderSelfAttention(
        layer.self_attn.longformer_self_attn
    )
    clone = copy.copy(layer)
    clone._modules = dict(layer._modules)
    clone._modules["self_attn"] = attention_block
    return clone


class EncoderGraph(nn.Module):
    def __init__(self, led):
        super().__init__()
        encoder = led.encoder
        self.embed_tokens = encoder.embed_tokens
        self.embed_positions = encoder.embed_positions
        self.layernorm_embedding = encoder.layernorm_embedding
        self.layers = nn.ModuleList([_with_exportable_attention(layer) for layer in encoder.layers])

    def forward(self, input_ids, attention_mask, global_attention_mask):
        layout = ExportLayout.build(attention_mask, global_attention_mask)
        length = input_ids.shape[1]
        hidden_states = self.layernorm_embedding(self.embed_tokens(input_ids) + self.embed_positions.weight[:length])
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states, layout)
        return hidden_states


def _cross_mask(encoder_attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The decoder's additive cross-attention mask (B, 1, 1, L)."""
    mask = torch.zeros(encoder_attention_mask.shape, dtype=dtype, device=encoder_attention_mask.device)
    return mask.masked_fill(encoder_attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]


def _flat_rows(ids: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """(B, K) ids -> (B*K, 1) and K."""
    return ids.reshape(-1, 1), ids.shape[1]


class DecoderInitGraph(nn.Module):
    """(encoder states (B, L, d), encoder mask (B, L), first ids (B, K)) -> logits (B, K, V), the self-attention
    cache after one token per layer (B, K, H, 1, D) as keys then values, and the cross-attention keys/values
    (B, H, L, D) per layer."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.led.decoder
        self.lm = model

    def forward(self, encoder_hidden_states, encoder_attention_mask, decoder_input_ids):
        batch, group = decoder_input_ids.shape
        ids, group = _flat_rows(decoder_input_ids)
        cache = DecoderCache(group)
        out = self.decoder(ids, encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
                           past_key_values=cache, use_cache=True, group=group)
        logits = self.lm.logits(out.last_hidden_state[:, -1]).float().view(batch, group, -1)
        present = _grouped(out.past_key_values.self_kv, batch, group)
        cross = [tensor for pair in out.past_key_values.cross_kv for tensor in pair]
        return (logits, *present, *cross)


def _grouped(self_kv: List[Tuple[torch.Tensor, torch.Tensor]], batch, group) -> List[torch.Tensor]:
    """The cache's (B*K, H, T, D) keys and values, layer by layer, as (B, K, H, T, D)."""
    return [tensor.view(batch, group, *tensor.shape[1:]) for pair in self_kv for tensor in pair]


class DecoderStepGraph(nn.Module):
    """(ids (B, K), encoder mask (B, L), past self keys/values (B, K, H, T, D) per layer, cross keys/values
    (B, H, L, D) per layer) -> logits (B, K, V) and the present self keys/values (B, K, H, T+1, D)."""

    def __init__(self, model):
        super().__init__()
        self.decoder = model.led.decoder
        self.lm = model
        self.num_layers = len(self.decoder.layers)

    def forward(self, decoder_input_ids, encoder_attention_mask, *caches):
        n = self.num_layers
        batch, group = decoder_input_ids.shape
        ids, group = _flat_rows(decoder_input_ids)
        past, cross = caches[: 2 * n], caches[2 * n :]
        cache = DecoderCache(group)
        cache.self_kv = [(past[2 * i].flatten(0, 1), past[2 * i + 1].flatten(0, 1)) for i in range(n)]
        cache.cross_kv = [(cross[2 * i], cross[2 * i + 1]) for i in range(n)]
        # The decoder reads the encoder states only for their dtype once the cross keys/values are cached.
        out = self.decoder(ids, cross[0], encoder_attention_mask=encoder_attention_mask, past_key_values=cache,
                           use_cache=True, group=group)
        logits = self.lm.logits(out.last_hidden_state[:, -1]).float().view(batch, group, -1)
        return (logits, *_grouped(out.past_key_values.self_kv, batch, group))


class HeadGraph(nn.Module):
    """(encoder states (B, L, d), encoder mask (B, L), decoder ids (B, S, T)) -> head logits (B, S, T, X).

    ``S`` segments of ``T`` decoder positions per input (see ``LEDModel._segment``: one segment when the input
    fits the decoder's positions), every segment cross-attending its input's whole encoder output; ``X`` is 2
    (start, end) for QA and the number of labels for classification, computed at every position (the
    classifier's runner picks each row's last ``</s>``)."""

    def __init__(self, model, head: nn.Module):
        super().__init__()
        self.decoder = model.led.decoder
        self.head = head

    def forward(self, encoder_hidden_states, encoder_attention_mask, decoder_input_ids):
        batch, segments, length = decoder_input_ids.shape
        out = self.decoder(decoder_input_ids.reshape(-1, length), encoder_hidden_states,
                           encoder_attention_mask=encoder_attention_mask, group=segments)
        logits = self.head(out.last_hidden_state)
        return logits.view(batch, segments, length, -1)
