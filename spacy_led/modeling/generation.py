"""Greedy search, sampling, beam search and beam sampling for LED over the cached decoder, with transformers'
``generate()`` semantics.

The output equals ``transformers.LEDForConditionalGeneration.generate`` given the same arguments (same
decoder start token, same padding of finished rows, same length; with ``do_sample``, the same ids after the
same ``torch.manual_seed``), but the work is organised differently:

- the encoder runs once, and the decoder's cross-attention keys/values are computed once per *input*: the
  beams (or sampled sequences) of one input share them (``group``), the encoder output is never copied;
- inputs that can no longer change are dropped from the batch, so they stop costing decoder steps (unless
  per-step ``scores``/``logits`` are asked for, which transformers reports for every row); the loop ends as
  soon as every input is done;
- beam bookkeeping is a handful of tensor operations per step over all inputs at once;
- a score processor costs nothing per step unless its setting is on.

Semantics (transformers 5 ``GenerationConfig`` rules), lengths always count the decoder start token:

- ``max_length`` is the length of the returned sequences including the start token; ``max_new_tokens``
  (which wins over ``max_length``) is the number of tokens after it. With neither given anywhere,
  20 new tokens are generated (``max_length`` 21). ``min_new_tokens`` n (winning over ``min_length``) is
  ``min_length`` 1 + n.
- ``min_length``: ``</s>`` is banned while the sequence (start token included) is shorter than ``min_length``.
- ``no_repeat_ngram_size`` n: no n-gram occurs twice in a sequence (the start token counts as a token).
- ``forced_bos_token_id`` is forced as the first generated token, ``forced_eos_token_id`` as the token that
  reaches ``max_length``.
- Score processors, each only when set, in transformers' order: ``encoder_repetition_penalty`` p (scores of
  the input's tokens, padding included, times 1/p if negative, else divided by 1/p), ``repetition_penalty`` p
  (scores of the tokens so far, start token included: times p if negative, else divided by p),
  ``no_repeat_ngram_size``, ``encoder_no_repeat_ngram_size`` n (no n-gram of the input, padding included, is
  completed), ``bad_words_ids`` (a listed sequence is never completed; a lone ``</s>`` is not banned),
  ``min_length``, forced tokens, ``suppress_tokens`` (always banned), ``begin_suppress_tokens`` (banned as the
  first generated token, the second with ``forced_bos_token_id``); with ``do_sample`` then ``temperature``
  (scores divided by it), ``top_k`` (default 50; 0 turns it off) and ``top_p``, each keeping at least 1 token
  (beam sampling: number of eos ids + 1); ``renormalize_logits`` (log-softmax) last. Greedy search and
  sampling process the logits; beam search processes the log-softmax of the logits.
- Sampling: ``torch.multinomial(softmax(scores), 1)`` per row; ``num_return_sequences`` samples per input.
  multinomial draws one Exp(1) number per row and token and takes ``argmax(p / noise)``; this module draws
  the same numbers, for every row transformers still has (finished ones included), in the same order.
  Beam sampling draws ``K`` candidates per input without replacement from ``softmax(beam score + log-prob)``
  over all beams' tokens, then ranks them by score.
- Beam search keeps ``K = 2 * num_beams`` candidates a step (``(1 + number of eos ids) * num_beams`` for several
  eos ids). A candidate ending in ``</s>`` that ranks among the best ``num_beams`` becomes a finished
  hypothesis with score ``sum of log-probabilities / generated_tokens ** length_penalty``, where
  ``generated_tokens`` counts the tokens after the start token, ``</s>`` included. An input is done when
  ``early_stopping`` is True and it has ``num_beams`` finished hypotheses; otherwise when no running beam can
  beat its worst finished hypothesis: its best running score divided by (tokens generated so far) **
  length_penalty, or, for ``early_stopping="never"`` with a positive length penalty, by (``max_length`` - 1) **
  length_penalty.
- Finished greedy rows are padded with ``pad_token_id``; shorter beam hypotheses too (with ``</s>`` if the pad
  id is 0 or unset, as transformers does).
- ``return_dict_in_generate`` returns ``GenerateEncoderDecoderOutput`` / ``GenerateBeamEncoderDecoderOutput``
  (``spacy_led.modeling.outputs``) with transformers' fields; ``sequences_scores`` is always filled there.

Settings not given as arguments come from the ``generation_config`` argument, then from
``model.generation_config`` (the checkpoint's ``generation_config.json`` or old-style ``config.json``), then from
transformers' global defaults. An argument transformers has but this module does not implement is an error.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch.nn import functional as F

from .decoder_step import DecoderStep
from .generation_config import (
    GLOBAL_DEFAULTS,
    OUTPUT_NEUTRAL,
    SUPPORTED,
    UNSUPPORTED_NO_OP_VALUES,
    GenerationConfig,
    unsupported_message,
)
from .outputs import GenerateBeamEncoderDecoderOutput, GenerateEncoderDecoderOutput

DEFAULT_MAX_NEW_TOKENS = 20  # transformers' default max_length 20, counted after the decoder start token
EMPTY_SCORE = -1.0e9  # score of a beam slot with no hypothesis yet (also the handicap of beams 2.. at step 1)
TokenIds = Union[int, Sequence[int], None]
# A score processor: (scores (rows, vocab), tokens so far (rows, length) or None, length, input of each row or
# None) -> scores. It may change ``scores`` in place.
Processor = Callable[[torch.Tensor, Optional[torch.Tensor], int, Optional[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class GenerationSettings:
    """Every setting of one ``generate`` call, resolved and checked. Lengths include the decoder start token."""

    max_length: int
    min_length: int
    num_beams: int
    length_penalty: float
    no_repeat_ngram_size: int
    early_stopping: Union[bool, str]
    num_return_sequences: int
    decoder_start_token_id: int
    eos_token_ids: Tuple[int, ...]
    pad_token_id: Optional[int]
    forced_bos_token_id: Optional[int]
    forced_eos_token_ids: Tuple[int, ...]
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    encoder_repetition_penalty: float = 1.0
    encoder_no_repeat_ngram_size: int = 0
    bad_words_ids: Tuple[Tuple[int, ...], ...] = ()
    suppress_tokens: Tuple[int, ...] = ()
    begin_suppress_tokens: Tuple[int, ...] = ()
    renormalize_logits: bool = False
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False

    @property
    def needs_history(self) -> bool:
        """Whether a processor reads the tokens generated so far."""
        return bool(self.repetition_penalty != 1.0 or self.no_repeat_ngram_size or self.encoder_no_repeat_ngram_size
                    or any(len(word) > 1 for word in self.bad_words_ids))

    @property
    def needs_inputs(self) -> bool:
        """Whether a processor reads the input each decoder row belongs to."""
        return bool(self.encoder_repetition_penalty != 1.0 or self.encoder_no_repeat_ngram_size)

    @property
    def records_steps(self) -> bool:
        """Per-step scores/logits are returned for every row, so no row may leave the batch early."""
        return self.output_scores or self.output_logits


def _token_ids(name: str, value: TokenIds, vocab_size: int) -> Tuple[int, ...]:
    if value is None:
        return ()
    ids = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for token in ids:
        if token >= vocab_size:
            raise ValueError(f"{name} {token} is outside the vocabulary (0..{vocab_size - 1}).")
    return ids


def _as_config(value: Any) -> Optional[GenerationConfig]:
    """A GenerationConfig from ours, a dict, or transformers' ``GenerationConfig`` (read through its ``to_dict``)."""
    if value is None or isinstance(value, GenerationConfig):
        return value
    if not isinstance(value, Mapping) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return GenerationConfig.from_dict(value)
    raise TypeError(f"generation_config must be a GenerationConfig or a dict of settings; got {type(value).__name__}.")


def _arguments_config(kwargs: Mapping[str, Any]) -> GenerationConfig:
    """``generate()``'s keyword arguments as a checked GenerationConfig (None means not given)."""
    unknown = [k for k in kwargs if k not in SUPPORTED and k not in OUTPUT_NEUTRAL and k not in UNSUPPORTED_NO_OP_VALUES]
    if unknown:
        raise TypeError(f"generate() got unexpected keyword arguments {unknown}. " + unsupported_message(unknown))
    return GenerationConfig.from_dict({k: v for k, v in kwargs.items() if v is not None})


def resolve_settings(model, generation_config: Union[GenerationConfig, Mapping[str, Any], None] = None,
                     **kwargs: Any) -> GenerationSettings:
    """Merge ``generate()``'s arguments over ``generation_config``, the model's generation config and the global
    defaults (transformers' precedence); special tokens finally fall back to the model config's own ids."""
    config = model.config
    own = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(config)
    layers = [_arguments_config(kwargs).set_values(), (_as_config(generation_config) or GenerationConfig()).set_values(),
              own.set_values()]

    def pick(key: str, fallback: Any = None) -> Any:
        for layer in layers:
            if key in layer:
                return layer[key]
        return GLOBAL_DEFAULTS.get(key, fallback)

    vocab = config.vocab_size
    limit = config.max_decoder_position_embeddings
    max_new_tokens = pick("max_new_tokens")
    if max_new_tokens is not None:  # wins over max_length, wherever either came from
        max_length = 1 + max_new_tokens
        source = f"max_new_tokens={max_new_tokens}"
    elif any("max_length" in layer for layer in layers):
        max_length = pick("max_length")
        source = f"max_length={max_length}"
    else:
        max_length = 1 + DEFAULT_MAX_NEW_TOKENS
        source = "the default of 20 new tokens"
    # The last token is never fed back to the decoder, so max_length may exceed the positions by one.
    if max_length - 1 > limit:
        raise ValueError(
            f"{source} asks for sequences of {max_length} tokens (start token included), but the decoder has "
            f"{limit} positions (max_decoder_position_embeddings): at most {limit} new tokens can be generated. "
            f"Lower max_length / max_new_tokens."
        )
    min_new_tokens = pick("min_new_tokens")
    min_length = 1 + min_new_tokens if min_new_tokens is not None else pick("min_length")
    if min_length > max_length:
        warnings.warn(
            f"min_length {min_length} is larger than max_length {max_length}: generation stops at max_length.",
            UserWarning,
        )
    do_sample = pick("do_sample")
    num_beams = pick("num_beams")
    num_return_sequences = pick("num_return_sequences")
    if num_beams == 1 and num_return_sequences > 1 and not do_sample:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) needs beam search (num_beams > 1) or sampling "
            f"(do_sample=True): greedy search returns one sequence per input; use beam search or sampling."
        )
    if num_beams > 1 and num_return_sequences > num_beams:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) cannot exceed num_beams ({num_beams}): beam search "
            f"returns at most num_beams sequences per input; raise num_beams to {num_return_sequences}."
        )

    eos_token_ids = _token_ids("eos_token_id", pick("eos_token_id", config.eos_token_id), vocab)
    pad = pick("pad_token_id", config.pad_token_id)
    pad_token_id = pad if pad is not None else (eos_token_ids[0] if eos_token_ids else None)
    start = pick("decoder_start_token_id", config.decoder_start_token_id)
    if start is None:
        start = pick("bos_token_id", config.bos_token_id)
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) must be set to start the decoder.")
    (decoder_start_token_id,) = _token_ids("decoder_start_token_id", start, vocab)
    forced_bos = _token_ids("forced_bos_token_id", pick("forced_bos_token_id"), vocab)
    forced_eos = _token_ids("forced_eos_token_id", pick("forced_eos_token_id"), vocab)
    suppress = _token_ids("suppress_tokens", pick("suppress_tokens"), vocab)
    for name, forced in (("forced_bos_token_id", forced_bos), ("forced_eos_token_id", forced_eos)):
        if forced and set(forced) <= set(suppress):
            raise ValueError(f"every token of {name} {list(forced)} is also in suppress_tokens: forcing a banned "
                             f"token leaves nothing to generate. Remove it from one of them.")
    bad_words = tuple(_token_ids("bad_words_ids", word, vocab) for word in pick("bad_words_ids") or ())
    # transformers never bans a lone </s> through bad_words_ids (min_length does that).
    bad_words = tuple(word for word in bad_words if not (len(word) == 1 and word[0] in eos_token_ids))

    return_dict = pick("return_dict_in_generate")
    asked = [name for name in ("output_scores", "output_logits") if pick(name)]
    if asked and not return_dict:
        warnings.warn(f"{' and '.join(asked)} only take effect with return_dict_in_generate=True; ignored.",
                      UserWarning)
    return GenerationSettings(
        max_length=max_length,
        min_length=min_length,
        num_beams=num_beams,
        length_penalty=pick("length_penalty"),
        no_repeat_ngram_size=pick("no_repeat_ngram_size"),
        early_stopping=pick("early_stopping"),
        num_return_sequences=num_return_sequences,
        decoder_start_token_id=decoder_start_token_id,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        forced_bos_token_id=forced_bos[0] if forced_bos else None,
        forced_eos_token_ids=forced_eos,
        do_sample=do_sample,
        temperature=pick("temperature"),
        top_k=pick("top_k"),
        top_p=pick("top_p"),
        repetition_penalty=pick("repetition_penalty"),
        encoder_repetition_penalty=pick("encoder_repetition_penalty"),
        encoder_no_repeat_ngram_size=pick("encoder_no_repeat_ngram_size"),
        bad_words_ids=bad_words,
        suppress_tokens=suppress,
        begin_suppress_tokens=_token_ids("begin_suppress_tokens", pick("begin_suppress_tokens"), vocab),
        renormalize_logits=pick("renormalize_logits"),
        return_dict_in_generate=return_dict,
        output_scores=return_dict and pick("output_scores"),
        output_logits=return_dict and pick("output_logits"),
    )


def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    global_attention_mask: Optional[torch.Tensor] = None,
    generation_config: Union[GenerationConfig, Mapping[str, Any], None] = None,
    **kwargs: Any,
) -> Union[torch.Tensor, GenerateEncoderDecoderOutput, GenerateBeamEncoderDecoderOutput]:
    """Token ids (batch * num_return_sequences, length) that start with the decoder start token, or with
    ``return_dict_in_generate=True`` an output object (see the module docstring).

    ``attention_mask`` marks real tokens (1) and padding (0); without it every token is attended, as in
    transformers. ``global_attention_mask`` marks tokens with global attention; without it the first token of
    every row gets global attention (recommended for summarization; transformers would use none).
    ``generation_config`` (a ``GenerationConfig`` or a dict) and the keyword arguments take transformers' names
    (``spacy_led.modeling.generation_config.SUPPORTED``); arguments win over ``generation_config``.
    Sequences of input ``i`` are rows ``i * num_return_sequences ...``, best first for beam search.
    """
    settings = resolve_settings(model, generation_config, **kwargs)
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of shape (batch, length); got {type(input_ids).__name__}.")
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    if global_attention_mask is None and input_ids.dim() == 2:
        global_attention_mask = torch.zeros_like(input_ids)
        global_attention_mask[:, 0] = 1
    elif global_attention_mask is not None:
        global_attention_mask = global_attention_mask.to(device)
    with torch.no_grad():
        encoded = model.led.encoder(
            input_ids, attention_mask=attention_mask, global_attention_mask=global_attention_mask
        ).last_hidden_state
        start_decoder = partial(DecoderStep, model, max_positions=settings.max_length - 1)
        return search(settings, input_ids, encoded, attention_mask, start_decoder)


def search(settings: GenerationSettings, input_ids: torch.Tensor, encoded: torch.Tensor,
           attention_mask: Optional[torch.Tensor], start_decoder: Callable[..., Any]):
    """Greedy search, sampling or beam search from the encoder output ``encoded`` of ``input_ids``: what
    ``generate`` does after the encoder. ``start_decoder(encoded, attention_mask, group)`` returns the decoder
    run the search steps (``DecoderStep``'s ``logits``, ``keep_inputs`` and ``reorder``), so another
    backend (``spacy_led.onnx``'s onnxruntime graphs) gets the same search, processors and outputs."""
    processors = _score_processors(settings, input_ids)
    run_search = _greedy_search if settings.num_beams == 1 else _beam_search
    return run_search(start_decoder, encoded, attention_mask, settings, processors)


# ---- score processors ------------------------------------------------------------------------------------

def _score_processors(settings: GenerationSettings, input_ids: torch.Tensor) -> List[Processor]:
    """The score changes ``settings`` ask for, in transformers' order (see the module docstring); an empty list
    when none is set, so plain greedy and beam search pay nothing for them."""
    s = settings
    found: List[Processor] = []
    if s.encoder_repetition_penalty != 1.0:
        found.append(partial(_penalize_input_tokens, input_ids=input_ids, penalty=s.encoder_repetition_penalty))
    if s.repetition_penalty != 1.0:
        found.append(partial(_penalize_repeated_tokens, penalty=s.repetition_penalty))
    if s.no_repeat_ngram_size:
        found.append(_bans(partial(_ban_repeated_ngrams, n=s.no_repeat_ngram_size)))
    if s.encoder_no_repeat_ngram_size and input_ids.shape[1] >= s.encoder_no_repeat_ngram_size:
        found.append(_bans(partial(_ban_input_ngrams, n=s.encoder_no_repeat_ngram_size,
                                   input_ngrams=input_ids.unfold(1, s.encoder_no_repeat_ngram_size, 1))))
    if s.bad_words_ids:
        found.append(_bans(_bad_words_processor(s.bad_words_ids, input_ids.device)))
    if s.eos_token_ids and s.min_length > 1:
        found.append(_bans(partial(_ban_while_shorter, tokens=list(s.eos_token_ids), limit=s.min_length)))
    if s.forced_bos_token_id is not None:
        found.append(_bans(partial(_force_at, tokens=[s.forced_bos_token_id], position=1)))
    if s.forced_eos_token_ids:
        found.append(_bans(partial(_force_at, tokens=list(s.forced_eos_token_ids), position=s.max_length - 1)))
    if s.suppress_tokens:
        found.append(_bans(partial(_ban_while_shorter, tokens=list(s.suppress_tokens), limit=s.max_length)))
    if s.begin_suppress_tokens:
        first = 1 if s.forced_bos_token_id is None else 2
        found.append(_bans(partial(_ban_at, tokens=list(s.begin_suppress_tokens), position=first)))
    if s.do_sample:
        keep = 1 if s.num_beams == 1 else len(s.eos_token_ids) + 1 if s.eos_token_ids else 2
        if s.temperature != 1.0:
            found.append(lambda scores, *_: scores / s.temperature)
        if s.top_k != 0:
            found.append(partial(_keep_top_k, k=max(s.top_k, keep)))
        if s.top_p < 1.0:
            found.append(partial(_keep_top_p, p=s.top_p, keep=keep))
    if s.renormalize_logits:
        found.append(lambda scores, *_: scores.log_softmax(dim=-1))
    return found


def _bans(processor: Processor) -> Processor:
    """Mark ``processor`` as one that only sets scores to -inf, chosen by the tokens so far and not by the
    scores (greedy search may then run it on the LM head's int8 logits: ``greedy_head``)."""
    processor.only_bans = True
    return processor


def _only_bans(processors: List[Processor]) -> bool:
    return all(getattr(processor, "only_bans", False) for processor in processors)


def _process(processors: List[Processor], scores, history, length: int, inputs) -> torch.Tensor:
    for processor in processors:
        scores = processor(scores, history, length, inputs)
    return scores


def _penalize_input_tokens(scores, history, length, inputs, *, input_ids, penalty: float):
    """transformers' EncoderRepetitionPenaltyLogitsProcessor (its arithmetic, so that scores agree bit for bit)."""
    ids = input_ids[inputs]
    inverse = 1 / penalty
    score = scores.gather(1, ids)
    return scores.scatter(1, ids, torch.where(score < 0, score * inverse, score / inverse))


def _penalize_repeated_tokens(scores, history, length, inputs, *, penalty: float):
    score = scores.gather(1, history)
    return scores.scatter(1, history, torch.where(score < 0, score * penalty, score / penalty))


def _ban_repeated_ngrams(scores, history, length, inputs, *, n: int):
    """Ban every token that would complete an n-gram already in ``history`` (rows, length)."""
    if length < n:
        return scores
    windows = history.unfold(1, n, 1)  # (rows, length - n + 1, n): every n-gram so far
    prefix = history[:, length - n + 1 :]  # the n - 1 tokens the next token would extend
    rows, starts = (windows[:, :, :-1] == prefix[:, None, :]).all(dim=2).nonzero(as_tuple=True)
    scores[rows, windows[rows, starts, -1]] = -math.inf
    return scores


def _ban_input_ngrams(scores, history, length, inputs, *, n: int, input_ngrams: torch.Tensor):
    """Ban every token that would complete an n-gram of the row's input (``input_ngrams``: (batch, count, n))."""
    if length < n - 1:
        return scores
    ngrams = input_ngrams[inputs]
    prefix = history[:, length - n + 1 :]
    rows, starts = (ngrams[:, :, :-1] == prefix[:, None, :]).all(dim=2).nonzero(as_tuple=True)
    scores[rows, ngrams[rows, starts, -1]] = -math.inf
    return scores


def _bad_words_processor(bad_words: Tuple[Tuple[int, ...], ...], device) -> Processor:
    """Ban the last token of every bad word whose other tokens end the sequence (one comparison per prefix
    length, as transformers' SequenceBiasLogitsProcessor groups them)."""
    single = [word[0] for word in bad_words if len(word) == 1]
    by_prefix_length = {}
    for word in bad_words:
        if len(word) > 1:
            by_prefix_length.setdefault(len(word) - 1, []).append(word)
    groups = [
        (torch.tensor([w[:-1] for w in words], device=device), torch.tensor([w[-1] for w in words], device=device))
        for words in by_prefix_length.values()
    ]

    def ban(scores, history, length, inputs):
        if single:
            scores[:, single] = -math.inf
        for prefixes, last in groups:
            if prefixes.shape[1] > length:
                continue
            matches = (history[:, None, length - prefixes.shape[1] :] == prefixes).all(dim=2)
            rows, words = matches.nonzero(as_tuple=True)
            scores[rows, last[words]] = -math.inf
        return scores

    return ban


def _ban_while_shorter(scores, history, length, inputs, *, tokens: List[int], limit: int):
    """Ban ``tokens`` while the sequence is shorter than ``limit`` (``</s>`` under min_length; with max_length, always)."""
    if length < limit:
        scores[:, tokens] = -math.inf
    return scores


def _ban_at(scores, history, length, inputs, *, tokens: List[int], position: int):
    """Ban ``tokens`` as the token at ``position`` (begin_suppress_tokens)."""
    if length == position:
        scores[:, tokens] = -math.inf
    return scores


def _force_at(scores, history, length, inputs, *, tokens: List[int], position: int):
    """Only ``tokens`` may be the token at ``position`` (forced bos / eos)."""
    if length == position:
        scores.fill_(-math.inf)
        scores[:, tokens] = 0
    return scores


def _keep_top_k(scores, history, length, inputs, *, k: int):
    """transformers' TopKLogitsWarper: tokens scoring below the k-th best are banned (ties kept)."""
    k = min(k, scores.shape[-1])
    return scores.masked_fill(scores < scores.topk(k)[0][..., -1, None], -math.inf)


def _keep_top_p(scores, history, length, inputs, *, p: float, keep: int):
    """transformers' TopPLogitsWarper, operation for operation: the smallest set of best tokens whose probability
    reaches ``p`` (at least ``keep`` tokens)."""
    ordered, order = torch.sort(scores, descending=False)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)
    remove[..., -keep:] = 0
    return scores.masked_fill(remove.scatter(1, order, remove), -math.inf)


def _is_eos(tokens: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    eos = torch.tensor(settings.eos_token_ids, dtype=tokens.dtype, device=tokens.device)
    return torch.isin(tokens, eos)


def _noise(rows: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The Exp(1) numbers ``torch.multinomial`` draws for a (rows, width) probability table, in its order."""
    return torch.empty((rows, width), dtype=like.dtype, device=like.device).exponential_()


def _checked_probabilities(scores: torch.Tensor) -> torch.Tensor:
    probs = F.softmax(scores, dim=-1)
    if bool(torch.isnan(probs).any()):
        raise ValueError(
            "every token was banned for a sequence being sampled (bad_words_ids, suppress_tokens, n-gram or length "
            "constraints leave nothing to choose): nothing to sample. Relax those settings."
        )
    return probs


# ---- shared pieces ---------------------------------------------------------------------------------------

def _worth_compacting(done: int, active: int) -> bool:
    """Dropping rows copies the caches once (about one decoder step of memory traffic): do it in batches."""
    return done > 0 and done * 8 >= active


# ---- greedy search and sampling ---------------------------------------------------------------------------

def _greedy_search(start_decoder, encoded, mask, settings: GenerationSettings, processors: List[Processor]):
    group = settings.num_return_sequences  # sampled sequences of one input share its encoder row
    batch, device = encoded.shape[0] * group, encoded.device
    fill = settings.pad_token_id if settings.pad_token_id is not None else 0
    sequences = torch.full((batch, settings.max_length), fill, dtype=torch.long, device=device)
    sequences[:, 0] = settings.decoder_start_token_id
    run = start_decoder(encoded, mask, group)
    rows = torch.arange(batch, device=device)  # row of `sequences` behind each decoder row
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # still in the batch, but done
    steps_scores, steps_logits = [], []
    if settings.return_dict_in_generate:  # sum and count of each sequence's token log-probabilities
        log_prob_sums = torch.zeros(batch, dtype=torch.float32, device=device)
        token_counts = torch.zeros(batch, dtype=torch.long, device=device)
    needs_history, needs_inputs = settings.needs_history, settings.needs_inputs
    # Only the argmax is kept: the next token through the LM head's int8 copy (greedy_head), the same token.
    argmax_only = (not settings.do_sample and not settings.return_dict_in_generate and not settings.records_steps
                   and _only_bans(processors) and hasattr(run, "greedy_tokens"))
    last = sequences[:, 0]
    length = 1
    for step in range(1, settings.max_length):
        history = sequences[rows, :step] if needs_history else None
        inputs = torch.div(rows, group, rounding_mode="floor") if needs_inputs else None
        if argmax_only:
            tokens = run.greedy_tokens(last, partial(_process, processors, history=history, length=step,
                                                     inputs=inputs))
        else:
            logits = run.logits(last)
            if settings.output_logits:
                steps_logits.append(logits.clone())
            scores = _process(processors, logits, history, step, inputs)
            if settings.output_scores:
                steps_scores.append(scores)
            if settings.do_sample:
                probs = _checked_probabilities(scores)
                tokens = (probs / _noise(batch, probs.shape[-1], probs)[rows]).argmax(dim=-1)
            else:
                tokens = scores.argmax(dim=-1)
        if settings.return_dict_in_generate:
            chosen = F.log_softmax(scores, dim=-1).gather(1, tokens[:, None])[:, 0]
            log_prob_sums[rows] += chosen.masked_fill(finished, 0.0)
            token_counts[rows] += (~finished).long()
        if settings.eos_token_ids:
            tokens = tokens.masked_fill(finished, settings.pad_token_id)
            finished = finished | _is_eos(tokens, settings)
        sequences[rows, step] = tokens
        length = step + 1
        if length == settings.max_length or bool(finished.all()):
            break
        if not settings.records_steps:
            done_inputs = finished.view(-1, group).all(dim=1)
            if _worth_compacting(int(done_inputs.sum()), done_inputs.numel()):
                kept = run.keep_inputs((~done_inputs).nonzero().flatten())
                rows, tokens, finished = rows[kept], tokens[kept], finished[kept]
        last = tokens
    sequences = sequences[:, :length]
    if not settings.return_dict_in_generate:
        return sequences
    return GenerateEncoderDecoderOutput(
        sequences=sequences,
        scores=tuple(steps_scores) if settings.output_scores else None,
        logits=tuple(steps_logits) if settings.output_logits else None,
        sequences_scores=log_prob_sums / token_counts.clamp_min(1),
    )


# ---- beam search and beam sampling ------------------------------------------------------------------------

@dataclass
class _Hypotheses:
    """The ``num_beams`` best finished hypotheses of each input, best first: tokens (with, when they are
    tracked, the beam indices after ``max_length``), score, number of generated tokens, and whether the slot
    holds a hypothesis at all (empty slots score EMPTY_SCORE)."""

    tokens: torch.Tensor  # (inputs, beams, width)
    scores: torch.Tensor  # (inputs, beams)
    lengths: torch.Tensor
    filled: torch.Tensor

    @classmethod
    def empty(cls, batch: int, beams: int, template: torch.Tensor) -> "_Hypotheses":
        device = template.device
        return cls(
            template.repeat(batch, beams, 1),
            torch.full((batch, beams), EMPTY_SCORE, dtype=torch.float32, device=device),
            torch.zeros((batch, beams), dtype=torch.long, device=device),
            torch.zeros((batch, beams), dtype=torch.bool, device=device),
        )

    def add(self, tokens, scores, length: int, eligible) -> None:
        """Merge candidates (inputs, K, ...) whose ``eligible`` is set; keep the best ``beams``, sorted."""
        beams = self.scores.shape[1]
        merged = torch.cat([self.scores, scores.masked_fill(~eligible, -math.inf)], dim=1)
        self.scores, best = merged.topk(beams, dim=1)
        self.tokens = _take(torch.cat([self.tokens, tokens], dim=1), best)
        new_lengths = torch.full_like(scores, length, dtype=torch.long)
        self.lengths = torch.cat([self.lengths, new_lengths], dim=1).gather(1, best)
        self.filled = torch.cat([self.filled, eligible], dim=1).gather(1, best)

    def select(self, keep: torch.Tensor) -> "_Hypotheses":
        return _Hypotheses(self.tokens[keep], self.scores[keep], self.lengths[keep], self.filled[keep])

    def store(self, inputs: torch.Tensor, hypotheses: "_Hypotheses") -> None:
        """Write the hypotheses of ``inputs`` (indices into this batch)."""
        self.tokens[inputs] = hypotheses.tokens
        self.scores[inputs] = hypotheses.scores
        self.lengths[inputs] = hypotheses.lengths
        self.filled[inputs] = hypotheses.filled


def _take(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tensor (inputs, n, ...) indexed along dim 1 by index (inputs, k)."""
    return tensor.gather(1, index.view(*index.shape, *([1] * (tensor.dim() - 2))).expand(-1, -1, *tensor.shape[2:]))


def _sample_candidates(totals: torch.Tensor, kept: int, inputs: torch.Tensor, batch: int):
    """transformers' beam sampling: ``torch.multinomial(softmax(totals), kept)`` without replacement (the
    ``kept`` largest p / Exp(1) noise, the noise drawn for all ``batch`` inputs), then ranked by score."""
    probs = _checked_probabilities(totals)
    index = (probs / _noise(batch, probs.shape[-1], probs)[inputs]).topk(kept, dim=1)[1]
    scores, order = totals.gather(1, index).sort(dim=-1, descending=True)
    return scores, index.gather(1, order)


def _beam_search(start_decoder, encoded, mask, settings: GenerationSettings, processors: List[Processor]):
    batch, device = encoded.shape[0], encoded.device
    beams, max_length, penalty = settings.num_beams, settings.max_length, settings.length_penalty
    # transformers keeps (1 + number of eos ids) * beams candidates, at least 2 * beams, so that at least
    # `beams` of them continue when every beam proposes </s>.
    kept = max(2, 1 + len(settings.eos_token_ids)) * beams
    # transformers pads hypotheses with `pad_token_id or eos_token_id` (so </s> when the pad id is 0).
    if settings.eos_token_ids:
        fill = settings.pad_token_id or settings.eos_token_ids[0]
    else:
        fill = -1  # every hypothesis reaches max_length: never visible
    stop_when_full = settings.early_stopping is True
    # Beam indices (for return_dict_in_generate) ride along after the tokens, so every reordering moves both.
    track = settings.return_dict_in_generate
    template = torch.full((2 * max_length - 1 if track else max_length,), fill, dtype=torch.long, device=device)
    template[0] = settings.decoder_start_token_id
    template[max_length:] = -1

    run = start_decoder(encoded, mask, beams)
    inputs = torch.arange(batch, device=device)  # input index of each active group
    running = template.repeat(batch, beams, 1)
    # All beams start identical: only the first one may propose tokens at the first step.
    running_scores = torch.zeros((batch, beams), dtype=torch.float32, device=device)
    running_scores[:, 1:] = EMPTY_SCORE
    finished = _Hypotheses.empty(batch, beams, template)
    improvable = torch.ones(batch, dtype=torch.bool, device=device)  # can a running beam still beat the worst?
    results = _Hypotheses.empty(batch, beams, template)  # of inputs already dropped
    in_top = torch.arange(kept, device=device) < beams  # only the best `beams` candidates may finish
    last = running[:, :, 0].flatten()
    steps_scores, steps_logits = [], []
    needs_history, needs_inputs = settings.needs_history, settings.needs_inputs

    for step in range(1, max_length):
        active = inputs.numel()
        logits = run.logits(last)
        if settings.output_logits:
            steps_logits.append(logits.clone())
        log_probs = F.log_softmax(logits, dim=-1)
        vocab = log_probs.shape[-1]
        history = running.view(active * beams, -1)[:, :step] if needs_history else None
        row_inputs = inputs.repeat_interleave(beams) if needs_inputs else None
        log_probs = _process(processors, log_probs, history, step, row_inputs)
        if settings.output_scores:
            steps_scores.append(log_probs)
        totals = (log_probs.view(active, beams, vocab) + running_scores[:, :, None]).view(active, beams * vocab)
        if settings.do_sample:
            top_scores, top_index = _sample_candidates(totals, kept, inputs, batch)
        else:
            top_scores, top_index = totals.topk(kept, dim=1)
        parent = torch.div(top_index, vocab, rounding_mode="floor")
        candidates = _take(running, parent)
        candidates[:, :, step] = top_index % vocab
        if track:
            candidates[:, :, max_length + step - 1] = parent + inputs[:, None] * beams
        if step + 1 == max_length:
            ends = torch.ones_like(in_top).expand(active, kept)
        elif settings.eos_token_ids:
            ends = _is_eos(candidates[:, :, step], settings)
        else:
            ends = torch.zeros_like(in_top).expand(active, kept)

        # Finished hypotheses: sum of log-probs / generated tokens (</s> included) ** length_penalty. Inputs
        # that are done accept no more.
        accepting = improvable & ~(finished.filled.all(dim=1) & stop_when_full)
        finished.add(candidates, top_scores / (step**penalty), step, ends & in_top & accepting[:, None])
        if step + 1 == max_length:
            break

        # The best candidates that did not end continue. Ended ones get transformers' -1e9 handicap rather than
        # a mask, so that they would still outrank impossible (-inf) continuations.
        running_scores, survivors = (top_scores + ends.float() * -1.0e9).topk(beams, dim=1)
        running = _take(candidates, survivors)
        parent = parent.gather(1, survivors)
        run.reorder((parent + torch.arange(active, device=device)[:, None] * beams).flatten())
        last = running[:, :, step].flatten()

        improvable = improvable & _can_improve(running_scores[:, 0], finished.scores, step, settings)
        full = finished.filled.all(dim=1)
        done = ~improvable | (full & stop_when_full)
        if bool(done.all()):
            break
        if not settings.records_steps and _worth_compacting(int(done.sum()), active):
            results.store(inputs[done], finished.select(done))
            keep = (~done).nonzero().flatten()
            run.keep_inputs(keep)
            inputs, running, running_scores = inputs[keep], running[keep], running_scores[keep]
            improvable = improvable[keep]
            finished = finished.select(keep)
            last = running[:, :, step].flatten()

    results.store(inputs, finished)
    count = settings.num_return_sequences
    generated = int(results.lengths[:, :count].max())
    sequences = results.tokens[:, :count, : 1 + generated].reshape(batch * count, 1 + generated)
    if not track:
        return sequences
    return GenerateBeamEncoderDecoderOutput(
        sequences=sequences,
        sequences_scores=results.scores[:, :count].reshape(batch * count),
        scores=tuple(steps_scores) if settings.output_scores else None,
        logits=tuple(steps_logits) if settings.output_logits else None,
        beam_indices=results.tokens[:, :count, max_length : max_length + generated].reshape(batch * count, generated),
    )


def _can_improve(best_running: torch.Tensor, finished_scores: torch.Tensor, generated: int,
                 settings: GenerationSettings) -> torch.Tensor:
    """Whether the best running beam (score per input) may still beat the worst finished hypothesis.

    transformers' heuristic: the running score is normalised as if the beam ended now (``generated`` tokens
    after the start token), or, with ``early_stopping="never"`` and a positive length penalty, at the longest
    possible length. Empty slots hold EMPTY_SCORE, so an input with room always can.
    """
    penalty = settings.length_penalty
    length = settings.max_length - 1 if settings.early_stopping == "never" and penalty > 0 else generated
    return best_running / (length**penalty) > finished_scores.min(dim=1).values
