"""Model outputs with HuggingFace's field names.

Dataclasses that also behave like transformers' ``ModelOutput`` where users rely on it: ``out.logits``,
``out["logits"]`` and ``out[0]`` (the first field that is set) all work.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Tuple

import torch
import torch.utils._pytree as pytree


class ModelOutput:
    def __init_subclass__(cls, **kwargs):
        """Make every output a pytree node, as transformers' outputs are: ``DistributedDataParallel`` finds the
        output tensors through torch's pytree to queue its gradient all-reduce (``static_graph``) and to route
        unused outputs (``find_unused_parameters``); an unregistered output is an opaque leaf to it, and the
        gradients of the first ``static_graph`` step would never be averaged."""
        super().__init_subclass__(**kwargs)
        pytree.register_pytree_node(
            cls,
            lambda output: ([getattr(output, f.name) for f in fields(output)], [f.name for f in fields(output)]),
            lambda values, _names: cls(*values),
            serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        )

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def fields_dict(self) -> Dict[str, Any]:
        """Every field, set or not, by name (the tensors themselves: ``dataclasses.asdict`` would copy them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class EncoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    global_attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class DecoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[Tuple[torch.Tensor, ...]] = None


# A dataclass lists the fields of its bases from the last base to the first, then its own: each output below
# names its bases in the reverse of the order its fields take, so the fields every encoder-decoder output shares
# are written once (``_Seq2SeqFields``) and still sit where transformers puts them.


@dataclass
class _Seq2SeqFields(ModelOutput):
    """What every encoder-decoder output carries besides its own head's fields."""

    past_key_values: Optional[Any] = None
    decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    decoder_attentions: Optional[Tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[Tuple[torch.Tensor, ...]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    encoder_attentions: Optional[Tuple[torch.Tensor, ...]] = None
    encoder_global_attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class _DecoderState(ModelOutput):
    last_hidden_state: Optional[torch.Tensor] = None  # the decoder's


@dataclass
class Seq2SeqModelOutput(_Seq2SeqFields, _DecoderState):
    """``last_hidden_state``, then the shared fields."""


@dataclass
class _Logits(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None


@dataclass
class Seq2SeqLMOutput(_DecoderState, _Seq2SeqFields, _Logits):
    """``loss``, ``logits``, the shared fields, then the decoder's ``last_hidden_state`` (transformers has no
    such field; kept for the heads that pool it)."""


@dataclass
class Seq2SeqSequenceClassifierOutput(Seq2SeqLMOutput):
    pass


@dataclass
class _SpanLogits(ModelOutput):
    loss: Optional[torch.Tensor] = None
    start_logits: Optional[torch.Tensor] = None
    end_logits: Optional[torch.Tensor] = None


@dataclass
class Seq2SeqQuestionAnsweringOutput(_DecoderState, _Seq2SeqFields, _SpanLogits):
    """``loss``, ``start_logits``, ``end_logits``, the shared fields, then the decoder's ``last_hidden_state``."""


@dataclass
class GenerateEncoderDecoderOutput(ModelOutput):
    """``generate(return_dict_in_generate=True)`` of greedy search and sampling. ``scores`` (with
    ``output_scores``) are the processed next-token scores of every step, ``logits`` (``output_logits``) the raw
    ones, each (batch * num_return_sequences, vocab). ``sequences_scores`` is spacy-led's addition (transformers
    has no such field here): the mean log-probability of each sequence's generated tokens under the distribution
    they were chosen from (``</s>`` included, padding not)."""

    sequences: torch.Tensor
    scores: Optional[Tuple[torch.Tensor, ...]] = None
    logits: Optional[Tuple[torch.Tensor, ...]] = None
    sequences_scores: Optional[torch.Tensor] = None


@dataclass
class GenerateBeamEncoderDecoderOutput(ModelOutput):
    """``generate(return_dict_in_generate=True)`` of beam search and beam sampling, as transformers returns it:
    ``sequences_scores`` (the length-normalised beam score of each returned sequence; transformers fills it only
    with ``output_scores=True``, spacy-led always), ``scores`` (processed log-probabilities of every step,
    (batch * num_beams, vocab)), ``logits`` and ``beam_indices`` (for each generated token, the index
    ``input * num_beams + beam`` of the beam it continued; -1 after the end)."""

    sequences: torch.Tensor
    sequences_scores: Optional[torch.Tensor] = None
    scores: Optional[Tuple[torch.Tensor, ...]] = None
    logits: Optional[Tuple[torch.Tensor, ...]] = None
    beam_indices: Optional[torch.Tensor] = None
