"""The LED model: embeddings, encoder and decoder stacks, LEDModel and its three task heads.

Module and parameter names mirror HuggingFace's ``modeling_led.py``, so a checkpoint's state dict loads
without renaming. Calling conventions follow transformers (``forward`` keywords, output field names,
``from_pretrained`` / ``save_pretrained``), so a transformers user switches by changing an import.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .attention import DecoderAttention, EncoderMaskLayout, LEDEncoderAttention, transformers_attention_layout
from .config import LEDConfig
from .generation_config import GenerationConfig
from .outputs import (
    DecoderOutput,
    EncoderOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqQuestionAnsweringOutput,
    Seq2SeqSequenceClassifierOutput,
)

logger = logging.getLogger("spacy_led")

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def _activation(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation_function {name!r} is not supported; use one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from targets: start token first, -100 (ignored label) replaced by padding."""
    shifted = input_ids.new_zeros(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _check_ids(name: str, ids: torch.Tensor, vocab_size: int, max_positions: int, limit_name: str) -> None:
    if ids.dim() != 2:
        raise ValueError(
            f"{name} must have shape (batch, length); got {tuple(ids.shape)}. "
            f"For a single sequence add a batch dimension: {name}[None]."
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(ids.shape)}): give at least one token per row.")
    if ids.shape[1] > max_positions:
        raise ValueError(
            f"{name} has {ids.shape[1]} tokens but the model has only {max_positions} positions "
            f"({limit_name}): truncate the input, or split it into chunks of at most {max_positions} tokens."
        )
    if ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"{name} must hold integer token ids; got dtype {ids.dtype}.")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} holds token id {low if low < 0 else high}, outside the vocabulary (0..{vocab_size - 1}): "
            f"was it made by another model's tokenizer?"
        )


def _check_mask(name: str, mask: Optional[torch.Tensor], ids: torch.Tensor, ids_name: str) -> None:
    if mask is not None and tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but {ids_name} has shape {tuple(ids.shape)}: "
            f"they must match, one mask value per token."
        )


class LEDEncoderLayer(nn.Module):
    def __init__(self, config: LEDConfig, layer_id: int):
        super().__init__()
        d = config.d_model
        self.self_attn = LEDEncoderAttention(
            d, config.encoder_attention_heads, config.attention_window[layer_id], config.attention_dropout
        )
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation_fn = _activation(config.activation_function)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    # Without autograd, everything after the attention (output projection, layer norms, feed-forward) works on
    # chunks of this many tokens: the (chunk, ffn_dim) intermediates stay cache-sized and are reused instead of
    # freshly paged in at every layer, so the time per token does not grow with the length. With gradient
    # checkpointing in training each chunk is checkpointed: backward holds one chunk's (chunk, ffn_dim)
    # activations at a time instead of the whole sequence's. Every token is computed alone either way.
    chunk_tokens = 1024
    gradient_checkpointing = False  # set by the model's gradient_checkpointing_enable()

    def forward(self, hidden_states, layout: EncoderMaskLayout, output_attentions: bool = False):
        length = hidden_states.shape[1]
        # (A traced graph, such as the ONNX export's, must not bake in the chunks of the length it was traced at.)
        chunked = length > self.chunk_tokens and not torch.jit.is_tracing()
        if chunked and not (output_attentions or torch.is_grad_enabled()):
            probs = None
            hidden_states = self._after_attention_chunks(hidden_states, layout)
        else:
            attn, probs = self.self_attn.longformer_self_attn(hidden_states, layout, output_attentions)
            if chunked and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                pieces = [
                    checkpoint(self._after_attention, hidden_states[:, start : start + self.chunk_tokens],
                               attn[:, start : start + self.chunk_tokens], use_reentrant=False)
                    for start in range(0, length, self.chunk_tokens)
                ]
                hidden_states = torch.cat(pieces, dim=1)
            else:
                hidden_states = self._after_attention(hidden_states, attn)
        if hidden_states.dtype == torch.float16 and not torch.isfinite(hidden_states).all():
            clamp = torch.finfo(hidden_states.dtype).max - 1000
            hidden_states = hidden_states.clamp(-clamp, clamp)
        return hidden_states, probs

    def _after_attention(self, residual: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The layer after its self-attention (``attn``: before the output projection), token by token."""
        attn = self.self_attn.output(attn)
        hidden_states = self.self_attn_layer_norm(residual + F.dropout(attn, self.dropout, self.training))
        residual = hidden_states
        hidden_states = self.activation_fn(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, self.activation_dropout, self.training)
        hidden_states = F.dropout(self.fc2(hidden_states), self.dropout, self.training)
        return self.final_layer_norm(residual + hidden_states)

    def _after_attention_chunks(self, hidden_states: torch.Tensor, layout: EncoderMaskLayout) -> torch.Tensor:
        """The whole layer without autograd, the part after the attention in chunks of ``chunk_tokens``: the
        attention's output (before its projection) becomes the layer's output, each chunk reading its rows
        before it overwrites them."""
        out, _ = self.self_attn.longformer_self_attn(hidden_states, layout)
        for start in range(0, out.shape[1], self.chunk_tokens):
            rows = out[:, start : start + self.chunk_tokens]
            rows.copy_(self._after_attention(hidden_states[:, start : start + self.chunk_tokens], rows))
        return out


class LEDDecoderLayer(nn.Module):
    def __init__(self, config: LEDConfig):
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = DecoderAttention(d, heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = DecoderAttention(d, heads, config.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation_fn = _activation(config.activation_function)
        self.dropout = config.dropout
        self.activation_dropout = config.activation_dropout

    def forward(
        self,
        hidden_states,
        self_mask,
        past_self_kv: Optional[Tuple[torch.Tensor, torch.Tensor]],
        cross_kv: Optional[Tuple[torch.Tensor, torch.Tensor]],
        encoder_hidden_states: torch.Tensor,
        cross_mask,
        group: int,
        output_attentions: bool = False,
    ):
        """``cross_kv``: the cross-attention keys and values from a cache, or None to project them here from
        ``encoder_hidden_states``: inside the layer, so that under gradient checkpointing they are recomputed
        in backward rather than kept for it (two (L, d_model) tensors per layer, 100 MB at 16k tokens)."""
        if cross_kv is None:
            cross_kv = self.encoder_attn.project_kv(encoder_hidden_states)
        residual = hidden_states
        k, v = self.self_attn.project_kv(hidden_states)
        if past_self_kv is not None:
            k = torch.cat([past_self_kv[0], k], dim=2)
            v = torch.cat([past_self_kv[1], v], dim=2)
        attn, self_probs = self.self_attn(hidden_states, k, v, self_mask, 1, output_attentions)
        hidden_states = self.self_attn_layer_norm(residual + F.dropout(attn, self.dropout, self.training))
        residual = hidden_states
        attn, cross_probs = self.encoder_attn(hidden_states, cross_kv[0], cross_kv[1], cross_mask, group, output_attentions)
        hidden_states = self.encoder_attn_layer_norm(residual + F.dropout(attn, self.dropout, self.training))
        residual = hidden_states
        hidden_states = self.activation_fn(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, self.activation_dropout, self.training)
        hidden_states = F.dropout(self.fc2(hidden_states), self.dropout, self.training)
        hidden_states = self.final_layer_norm(residual + hidden_states)
        return hidden_states, (k, v), self_probs, cross_probs


class DecoderCache:
    """Keys and values of the decoder: self-attention grows a step at a time, cross-attention is computed once.

    ``group`` rows (the beams of one input) share one copy of the cross-attention keys and values.
    """

    def __init__(self, group: int = 1):
        self.group = group
        self.self_kv: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self.cross_kv: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def get_seq_length(self) -> int:
        return self.self_kv[0][0].shape[2] if self.self_kv else 0

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Select rows after a beam-search step. ``beam_idx`` must keep each row inside its own group, so the
        shared cross-attention entries stay valid."""
        self.self_kv = [(k.index_select(0, beam_idx), v.index_select(0, beam_idx)) for k, v in self.self_kv]


class LEDPreTrainedModel(nn.Module):
    """Weight initialisation, checkpoint I/O and training switches shared by every LED model."""

    base_model_prefix = "led"
    # Parameters created fresh (with a warning) when a checkpoint lacks them: the task heads.
    head_prefixes: Tuple[str, ...] = ()

    def __init__(self, config: LEDConfig):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        self.apply(self._init_weights)

    def tie_weights(self) -> None:
        """Re-share the token embeddings (after loading or moving parameters)."""
        self.led.tie_weights()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each layer's activations in the backward pass, and inside an encoder layer one chunk of
        tokens at a time: long inputs train in far less memory."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled

    def _run_base_model(
        self,
        input_ids,
        attention_mask,
        global_attention_mask,
        decoder_input_ids,
        decoder_attention_mask,
        encoder_outputs,
        output_attentions,
        output_hidden_states,
        **more,
    ) -> Seq2SeqModelOutput:
        """The heads' call of ``self.led``, given their ``forward`` arguments in this order; ``more`` holds what
        only some heads pass (the decoder cache, ``inputs_embeds``, ``use_cache``). Without ``use_cache`` the
        heads that read the input itself (classification, question answering) keep no cache, as transformers'."""
        return self.led(
            input_ids=input_ids,
            attention_mask=attention_mask,
            global_attention_mask=global_attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **{"use_cache": False, **more},
        )

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path],
        *,
        revision: Optional[str] = None,
        dtype: Optional[torch.dtype] = None,
        device: Union[str, torch.device, None] = None,
        config: Optional[LEDConfig] = None,
        **config_changes,
    ):
        """Load a HuggingFace LED checkpoint: a directory, or a hub id such as ``allenai/led-base-16384``
        (optionally ``@revision``, or ``revision=``; see ``hub.py``). ``checkpoint.load_pretrained`` says
        what is checked."""
        from .checkpoint import load_pretrained

        return load_pretrained(
            cls, path, revision=revision, dtype=dtype, device=device, config=config, **config_changes
        )

    def save_pretrained(self, path: Union[str, Path]) -> None:
        """Write ``config.json`` + ``model.safetensors`` that both spacy-led and transformers load."""
        from .checkpoint import save_pretrained

        save_pretrained(self, path)


def _run_layer(use_checkpoint: bool, layer: nn.Module, *args):
    if use_checkpoint:
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


class LEDEncoder(nn.Module):
    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(config.max_encoder_position_embeddings, config.d_model)
        self.layers = nn.ModuleList([LEDEncoderLayer(config, i) for i in range(config.encoder_layers)])
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        global_attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        config = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds to the encoder.")
        if input_ids is not None:
            _check_ids("input_ids", input_ids, config.vocab_size, config.max_encoder_position_embeddings,
                       "max_encoder_position_embeddings")
            inputs_embeds = self.embed_tokens(input_ids)
            reference = input_ids
        else:
            reference = inputs_embeds[..., 0]
            if reference.shape[1] > config.max_encoder_position_embeddings:
                raise ValueError(
                    f"inputs_embeds has {reference.shape[1]} positions; the encoder has only "
                    f"{config.max_encoder_position_embeddings}."
                )
        _check_mask("attention_mask", attention_mask, reference, "input_ids")
        _check_mask("global_attention_mask", global_attention_mask, reference, "input_ids")
        batch, length = reference.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        layout = EncoderMaskLayout.build(attention_mask, global_attention_mask)

        positions = self.embed_positions.weight[:length]
        hidden_states = self.layernorm_embedding(inputs_embeds + positions)
        hidden_states = F.dropout(hidden_states, config.dropout, self.training)

        all_states = [] if output_hidden_states else None
        all_local = [] if output_attentions else None
        all_global = [] if (output_attentions and layout.has_global) else None
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if output_hidden_states:
                all_states.append(hidden_states)
            if self.training and config.encoder_layerdrop > 0 and torch.rand([]) < config.encoder_layerdrop:
                continue
            hidden_states, probs = _run_layer(use_checkpoint, layer, hidden_states, layout, output_attentions)
            if output_attentions:
                local_probs, global_probs = transformers_attention_layout(probs, layout, max(config.attention_window))
                all_local.append(local_probs)
                if layout.has_global:
                    all_global.append(global_probs)
        if output_hidden_states:
            all_states.append(hidden_states)
        return EncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_states) if all_states is not None else None,
            attentions=tuple(all_local) if all_local is not None else None,
            global_attentions=tuple(all_global) if all_global is not None else None,
        )


class LEDDecoder(nn.Module):
    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embed_tokens = embed_tokens
        self.embed_positions = nn.Embedding(config.max_decoder_position_embeddings, config.d_model)
        self.layers = nn.ModuleList([LEDDecoderLayer(config) for _ in range(config.decoder_layers)])
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[DecoderCache] = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        group: int = 1,
    ) -> DecoderOutput:
        """Run the decoder over ``input_ids`` (B, T), continuing ``past_key_values`` if given.

        ``group`` > 1: the rows are beams, ``group`` consecutive rows per encoder row; the encoder states and
        mask have B / group rows and are never copied per beam.
        """
        config = self.config
        cache = past_key_values
        past = cache.get_seq_length() if cache is not None else 0
        batch, length = input_ids.shape
        if past + length > config.max_decoder_position_embeddings:
            raise ValueError(
                f"the decoder input reaches position {past + length} but the decoder has only "
                f"{config.max_decoder_position_embeddings} positions (max_decoder_position_embeddings): "
                f"shorten the target (max_length / max_new_tokens) or the decoder input."
            )
        dtype = encoder_hidden_states.dtype
        hidden_states = self.embed_tokens(input_ids) + self.embed_positions.weight[past : past + length]
        hidden_states = F.dropout(self.layernorm_embedding(hidden_states), config.dropout, self.training)

        self_mask = None
        if length > 1:  # as the reference: a single new token needs no mask
            total = past + length
            causal = torch.ones(length, total, dtype=torch.bool, device=input_ids.device).tril(past)
            allowed = causal[None, None]
            if attention_mask is not None:
                allowed = allowed & (attention_mask[:, None, None, -total:] != 0)
            self_mask = torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device)
            self_mask = self_mask.masked_fill(~allowed, torch.finfo(dtype).min)
        cross_mask = None
        if encoder_attention_mask is not None:
            cross_mask = torch.zeros(encoder_attention_mask.shape, dtype=dtype, device=input_ids.device)
            cross_mask = cross_mask.masked_fill(encoder_attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]

        if cache is None and use_cache:
            cache = DecoderCache(group)
        if cache is not None and not cache.cross_kv:
            cache.cross_kv = [layer.encoder_attn.project_kv(encoder_hidden_states) for layer in self.layers]

        all_states = [] if output_hidden_states else None
        all_self = [] if output_attentions else None
        all_cross = [] if output_attentions else None
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        new_self_kv = []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_states.append(hidden_states)
            if self.training and config.decoder_layerdrop > 0 and torch.rand([]) < config.decoder_layerdrop:
                continue
            cross_kv = cache.cross_kv[i] if cache is not None else None
            past_kv = cache.self_kv[i] if (cache is not None and cache.self_kv) else None
            hidden_states, self_kv, self_probs, cross_probs = _run_layer(
                use_checkpoint, layer, hidden_states, self_mask, past_kv, cross_kv, encoder_hidden_states, cross_mask,
                group, output_attentions,
            )
            new_self_kv.append(self_kv)
            if output_attentions:
                all_self.append(self_probs)
                all_cross.append(cross_probs)
        if output_hidden_states:
            all_states.append(hidden_states)
        if cache is not None:
            cache.self_kv = new_self_kv
        return DecoderOutput(
            last_hidden_state=hidden_states,
            past_key_values=cache,
            hidden_states=tuple(all_states) if all_states is not None else None,
            attentions=tuple(all_self) if all_self is not None else None,
            cross_attentions=tuple(all_cross) if all_cross is not None else None,
        )


class LEDModel(LEDPreTrainedModel):
    """Encoder + decoder, no head. ``forward`` returns the decoder's last hidden state."""

    base_model_prefix = ""

    def __init__(self, config: LEDConfig, _init: bool = True):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = LEDEncoder(config, self.shared)
        self.decoder = LEDDecoder(config, self.shared)
        if _init:
            self.init_weights()

    def tie_weights(self) -> None:
        self.encoder.embed_tokens = self.shared
        self.decoder.embed_tokens = self.shared

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def get_encoder(self) -> LEDEncoder:
        return self.encoder

    def _segment(self, decoder_input_ids, past_key_values, decoder_attention_mask) -> Tuple[torch.Tensor, int]:
        """Inputs longer than the decoder's position table, for the heads that decode the input itself
        (question answering, classification; transformers fails on them): the decoder runs over consecutive
        segments of ``max_decoder_position_embeddings`` tokens, positions restarting in each segment, every
        segment cross-attending the whole encoder output. Inputs that fit are decoded exactly as transformers
        does. Returns the (B * segments, segment length) ids and the number of segments."""
        limit = self.config.max_decoder_position_embeddings
        batch, length = decoder_input_ids.shape
        if length <= limit or past_key_values is not None or decoder_attention_mask is not None:
            return decoder_input_ids, 1
        segments = -(-length // limit)
        padded = F.pad(decoder_input_ids, (0, segments * limit - length), value=self.config.pad_token_id)
        return padded.view(batch * segments, limit), segments

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        global_attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.Tensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs: Optional[Union[EncoderOutput, Tuple[torch.Tensor, ...]]] = None,
        past_key_values: Optional[DecoderCache] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> Seq2SeqModelOutput:
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                global_attention_mask=global_attention_mask,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        elif not isinstance(encoder_outputs, EncoderOutput):
            encoder_outputs = EncoderOutput(*encoder_outputs)
        segments = 1
        if decoder_input_ids is None:  # after the encoder, which has checked input_ids
            if input_ids is None:
                raise ValueError("give decoder_input_ids (or input_ids, from which they are shifted).")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id, self.config.decoder_start_token_id)
            decoder_input_ids, segments = self._segment(decoder_input_ids, past_key_values, decoder_attention_mask)
        _check_ids("decoder_input_ids", decoder_input_ids, self.config.vocab_size,
                   self.config.max_decoder_position_embeddings, "max_decoder_position_embeddings")
        decoder_outputs = self.decoder(
            decoder_input_ids,
            encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            attention_mask=decoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache and segments == 1,
            output_attentions=output_attentions and segments == 1,
            output_hidden_states=output_hidden_states and segments == 1,
            group=segments,
        )
        if segments > 1:
            states = decoder_outputs.last_hidden_state
            states = states.reshape(-1, segments * states.shape[1], states.shape[2])[:, : input_ids.shape[1]]
            decoder_outputs = DecoderOutput(last_hidden_state=states)
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            past_key_values=decoder_outputs.past_key_values,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            encoder_global_attentions=encoder_outputs.global_attentions,
        )


class LEDForConditionalGeneration(LEDPreTrainedModel):
    """LED with the language-modelling head: summaries and other text-to-text tasks."""

    def __init__(self, config: LEDConfig):
        super().__init__(config)
        self.led = LEDModel(config, _init=False)
        # generate()'s defaults; from_pretrained replaces them with the checkpoint's own.
        self.generation_config = GenerationConfig.from_model_config(config)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        self.led.tie_weights()
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.led.shared.weight

    def get_encoder(self) -> LEDEncoder:
        return self.led.encoder

    def logits(self, decoder_states: torch.Tensor) -> torch.Tensor:
        return self.lm_head(decoder_states) + self.final_logits_bias.to(decoder_states.dtype)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        global_attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.Tensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        past_key_values: Optional[DecoderCache] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> Seq2SeqLMOutput:
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        outputs = self._run_base_model(
            input_ids, attention_mask, global_attention_mask, decoder_input_ids, decoder_attention_mask,
            encoder_outputs, output_attentions, output_hidden_states,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
        )
        logits = self.logits(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
        return Seq2SeqLMOutput(loss=loss, logits=logits, **outputs.fields_dict())

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Greedy search, sampling or beam search with a key/value cache, with transformers' arguments; see
        ``spacy_led.modeling.generation.generate``."""
        from .generation import generate

        return generate(self, input_ids, **kwargs)


class LEDClassificationHead(nn.Module):
    def __init__(self, d_model: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(d_model, num_labels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(states)))))


def _last_eos_states(decoder_states: torch.Tensor, input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """The decoder state at each row's last ``</s>``.

    transformers requires every row to hold the same number of ``</s>``; taking each row's own last one gives
    the same result there and also works for rows that differ."""
    is_eos = input_ids == eos_token_id
    missing = ~is_eos.any(dim=1)
    if missing.any():
        rows = missing.nonzero().flatten().tolist()
        raise ValueError(
            f"rows {rows} of input_ids hold no </s> (id {eos_token_id}); sequence classification pools the "
            f"decoder state at the last </s>: encode the text with the tokenizer's special tokens."
        )
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = torch.where(is_eos, positions, -1).max(dim=1).values
    return decoder_states[torch.arange(input_ids.shape[0], device=input_ids.device), last]


class LEDForSequenceClassification(LEDPreTrainedModel):
    """LED with transformers 4.x's classification head over the decoder state at the last ``</s>``."""

    head_prefixes = ("classification_head.",)

    def __init__(self, config: LEDConfig):
        super().__init__(config)
        self.led = LEDModel(config, _init=False)
        self.classification_head = LEDClassificationHead(config.d_model, config.num_labels, config.classifier_dropout)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        global_attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.Tensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        labels: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> Seq2SeqSequenceClassifierOutput:
        outputs = self._run_base_model(
            input_ids, attention_mask, global_attention_mask, decoder_input_ids, decoder_attention_mask,
            encoder_outputs, output_attentions, output_hidden_states,
        )
        pooled = _last_eos_states(outputs.last_hidden_state, input_ids, self.config.eos_token_id)
        logits = self.classification_head(pooled)
        loss = None if labels is None else self.classification_loss(logits, labels)
        return Seq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **outputs.fields_dict())

    def set_labels(self, labels: Sequence[str], problem_type: Optional[str] = None) -> None:
        """Classify into ``labels`` (index i is ``labels[i]``): ``id2label`` follows, and a new, freshly
        initialised head replaces the old one when the labels differ (fine-tuning on another label set; the
        rest of the model is kept). ``problem_type`` (e.g. ``"multi_label_classification"``) is set if given."""
        if problem_type is not None:
            self.config.problem_type = problem_type
        id2label = dict(enumerate(str(label) for label in labels))
        if not id2label:
            raise ValueError("set_labels needs at least one label.")
        if self.config.id2label == id2label:
            return
        self.config.id2label = id2label
        head = LEDClassificationHead(self.config.d_model, len(id2label), self.config.classifier_dropout)
        head.apply(self._init_weights)
        self.classification_head = head.to(device=self.device, dtype=self.dtype)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """transformers' rule: regression for one label, cross-entropy for integer labels, else multi-label BCE."""
        problem = self.config.problem_type
        if problem is None:
            if self.config.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int32, torch.int64):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.config.num_labels).float(), labels.view(-1))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        raise ValueError(f"unknown problem_type {problem!r}: use regression, single_label_classification or "
                         f"multi_label_classification.")


class LEDForQuestionAnswering(LEDPreTrainedModel):
    """LED with transformers' extractive QA head (start/end logits) on the decoder states."""

    head_prefixes = ("qa_outputs.",)

    def __init__(self, config: LEDConfig):
        super().__init__(config)
        self.led = LEDModel(config, _init=False)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        global_attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.Tensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        start_positions: Optional[torch.Tensor] = None,
        end_positions: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> Seq2SeqQuestionAnsweringOutput:
        outputs = self._run_base_model(
            input_ids, attention_mask, global_attention_mask, decoder_input_ids, decoder_attention_mask,
            encoder_outputs, output_attentions, output_hidden_states,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(dim=-1)
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return Seq2SeqQuestionAnsweringOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, **outputs.fields_dict()
        )


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of start and end cross-entropy; positions outside the sequence are ignored (as transformers)."""
    ignored = start_logits.shape[1]
    start = start_positions.view(-1).clamp(0, ignored)
    end = end_positions.view(-1).clamp(0, ignored)
    start_loss = F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
    end_loss = F.cross_entropy(end_logits.float(), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2
