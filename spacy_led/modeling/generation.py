"""Greedy and beam search for LED over the cached decoder, with transformers' ``generate()`` semantics.

The output equals ``transformers.LEDForConditionalGeneration.generate`` given the same arguments (same
decoder start token, same padding of finished rows, same length), but the work is organised differently:

- the encoder runs once, and the decoder's cross-attention keys/values are computed once per *input*: the
  beams of one input share them (``group=num_beams``), the encoder output is never copied per beam;
- inputs (greedy rows, or beam groups) that can no longer change are dropped from the batch, so they stop
  costing decoder steps; the loop ends as soon as every input is done;
- beam bookkeeping is a handful of tensor operations per step over all inputs at once.

Semantics (transformers 5 ``GenerationConfig`` rules), lengths always count the decoder start token:

- ``max_length`` is the length of the returned sequences including the start token; ``max_new_tokens``
  (which wins over ``max_length``) is the number of tokens after it. With neither given anywhere,
  20 new tokens are generated (``max_length`` 21).
- ``min_length``: ``</s>`` is banned while the sequence (start token included) is shorter than ``min_length``.
- ``no_repeat_ngram_size`` n: no n-gram occurs twice in a sequence (the start token counts as a token).
- ``forced_bos_token_id`` is forced as the first generated token, ``forced_eos_token_id`` as the token that
  reaches ``max_length``.
- Beam search keeps ``2 * num_beams`` candidates a step (``(1 + number of eos ids) * num_beams`` for several
  eos ids). A candidate ending in ``</s>`` that ranks among the best ``num_beams`` becomes a finished
  hypothesis with score ``sum of log-probabilities / generated_tokens ** length_penalty``, where
  ``generated_tokens`` counts the tokens after the start token, ``</s>`` included. An input is done when
  ``early_stopping`` is True and it has ``num_beams`` finished hypotheses; otherwise when no running beam can
  beat its worst finished hypothesis: its best running score divided by (tokens generated so far) **
  length_penalty, or, for ``early_stopping="never"`` with a positive length penalty, by (``max_length`` - 1) **
  length_penalty.
- Finished greedy rows are padded with ``pad_token_id``; shorter beam hypotheses too (with ``</s>`` if the pad
  id is 0 or unset, as transformers does).

Settings not given as arguments come from the checkpoint (``model.config.generation_defaults``: its
``generation_config.json`` or old-style ``config.json``), then from transformers' global defaults.
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch.nn import functional as F

# transformers' GenerationConfig defaults, used when neither the caller nor the checkpoint sets a value.
GLOBAL_DEFAULTS: Dict[str, Any] = {
    "min_length": 0,
    "num_beams": 1,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "early_stopping": False,
    "num_return_sequences": 1,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
}
DEFAULT_MAX_NEW_TOKENS = 20  # transformers' default max_length 20, counted after the decoder start token
EMPTY_SCORE = -1.0e9  # score of a beam slot with no hypothesis yet (also the handicap of beams 2.. at step 1)
TokenIds = Union[int, Sequence[int], None]


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


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not a bool ({value!r}).")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


def _token_ids(name: str, value: TokenIds, vocab_size: int) -> Tuple[int, ...]:
    if value is None:
        return ()
    values = [value] if not isinstance(value, (list, tuple)) else list(value)
    ids = tuple(_as_int(name, v, 0) for v in values)
    for token in ids:
        if token >= vocab_size:
            raise ValueError(f"{name} {token} is outside the vocabulary (0..{vocab_size - 1}).")
    return ids


def resolve_settings(config, **given: Any) -> GenerationSettings:
    """Merge ``generate()``'s arguments over the checkpoint's generation defaults and the global defaults.

    Precedence as in transformers: an argument that is not None, then ``config.generation_defaults``, then
    ``GLOBAL_DEFAULTS``; special tokens finally fall back to the model config's own ids.
    """
    checkpoint = config.generation_defaults

    def pick(key: str, fallback: Any = None) -> Any:
        if given.get(key) is not None:
            return given[key]
        if checkpoint.get(key) is not None:
            return checkpoint[key]
        return GLOBAL_DEFAULTS.get(key, fallback)

    vocab = config.vocab_size
    limit = config.max_decoder_position_embeddings
    max_new_tokens = pick("max_new_tokens")
    if max_new_tokens is not None:  # wins over max_length, wherever either came from
        max_length = 1 + _as_int("max_new_tokens", max_new_tokens, 1)
        source = f"max_new_tokens={max_new_tokens}"
    elif pick("max_length") is not None:
        max_length = _as_int("max_length", pick("max_length"), 2)
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

    min_length = _as_int("min_length", pick("min_length"), 0)
    if min_length > max_length:
        warnings.warn(
            f"min_length {min_length} is larger than max_length {max_length}: generation stops at max_length.",
            UserWarning,
        )
    num_beams = _as_int("num_beams", pick("num_beams"), 1)
    num_return_sequences = _as_int("num_return_sequences", pick("num_return_sequences"), 1)
    if num_return_sequences > num_beams:
        hint = "use beam search (num_beams > 1)" if num_beams == 1 else f"raise num_beams to {num_return_sequences}"
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) cannot exceed num_beams ({num_beams}): greedy "
            f"search returns one sequence per input and beam search at most num_beams; {hint}."
        )
    early_stopping = pick("early_stopping")
    if early_stopping not in (True, False, "never") or not isinstance(early_stopping, (bool, str)):
        raise ValueError(f"early_stopping must be True, False or 'never'; got {early_stopping!r}.")
    length_penalty = pick("length_penalty")
    is_number = isinstance(length_penalty, (int, float)) and not isinstance(length_penalty, bool)
    if not is_number or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number; got {length_penalty!r}.")
    no_repeat_ngram_size = _as_int("no_repeat_ngram_size", pick("no_repeat_ngram_size"), 0)

    eos_token_ids = _token_ids("eos_token_id", pick("eos_token_id", config.eos_token_id), vocab)
    pad = pick("pad_token_id", config.pad_token_id)
    pad_token_id = _as_int("pad_token_id", pad, 0) if pad is not None else (eos_token_ids[0] if eos_token_ids else None)
    start = pick("decoder_start_token_id", config.decoder_start_token_id)
    if start is None:
        start = pick("bos_token_id", config.bos_token_id)
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) must be set to start the decoder.")
    (decoder_start_token_id,) = _token_ids("decoder_start_token_id", start, vocab)
    forced_bos = _token_ids("forced_bos_token_id", pick("forced_bos_token_id"), vocab)
    return GenerationSettings(
        max_length=max_length,
        min_length=min_length,
        num_beams=num_beams,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        early_stopping=early_stopping,
        num_return_sequences=num_return_sequences,
        decoder_start_token_id=decoder_start_token_id,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        forced_bos_token_id=forced_bos[0] if forced_bos else None,
        forced_eos_token_ids=_token_ids("forced_eos_token_id", pick("forced_eos_token_id"), vocab),
    )


def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    global_attention_mask: Optional[torch.Tensor] = None,
    max_length: Optional[int] = None,
    max_new_tokens: Optional[int] = None,
    min_length: Optional[int] = None,
    num_beams: Optional[int] = None,
    length_penalty: Optional[float] = None,
    no_repeat_ngram_size: Optional[int] = None,
    early_stopping: Union[bool, str, None] = None,
    num_return_sequences: Optional[int] = None,
    decoder_start_token_id: Optional[int] = None,
    eos_token_id: TokenIds = None,
    pad_token_id: Optional[int] = None,
    forced_bos_token_id: Optional[int] = None,
    forced_eos_token_id: TokenIds = None,
) -> torch.Tensor:
    """Token ids (batch * num_return_sequences, length) that start with the decoder start token.

    ``attention_mask`` marks real tokens (1) and padding (0); without it every token is attended, as in
    transformers. ``global_attention_mask`` marks tokens with global attention; without it the first token of
    every row gets global attention (recommended for summarization; transformers would use none).
    Sequences of input ``i`` are rows ``i * num_return_sequences ...``, best first.
    """
    settings = resolve_settings(
        model.config,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        min_length=min_length,
        num_beams=num_beams,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
        early_stopping=early_stopping,
        num_return_sequences=num_return_sequences,
        decoder_start_token_id=decoder_start_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        forced_bos_token_id=forced_bos_token_id,
        forced_eos_token_id=forced_eos_token_id,
    )
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
        search = _greedy_search if settings.num_beams == 1 else _beam_search
        return search(model, encoded, attention_mask, settings)


# ---- shared pieces ---------------------------------------------------------------------------------------

class _DecoderRun:
    """The decoder's state over the inputs still being generated: cache, encoder states and mask.

    ``group`` decoder rows per input (the beams) share one encoder row and one set of cross-attention keys.
    """

    def __init__(self, model, encoded: torch.Tensor, mask: Optional[torch.Tensor], group: int):
        self.model = model
        self.encoded = encoded
        self.mask = mask
        self.group = group
        self.cache = None

    def logits(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Float32 next-token logits (rows, vocab) after feeding one token per row."""
        out = self.model.led.decoder(
            last_tokens[:, None],
            self.encoded,
            encoder_attention_mask=self.mask,
            past_key_values=self.cache,
            use_cache=True,
            group=self.group,
        )
        self.cache = out.past_key_values
        return self.model.logits(out.last_hidden_state[:, -1]).float()

    def keep_inputs(self, keep: torch.Tensor) -> None:
        """Drop the inputs (encoder rows) not in ``keep`` together with their decoder rows."""
        offsets = torch.arange(self.group, device=keep.device)
        self.cache.reorder((keep[:, None] * self.group + offsets).flatten())
        self.cache.cross_kv = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in self.cache.cross_kv]
        self.encoded = self.encoded.index_select(0, keep)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, keep)


def _worth_compacting(done: int, active: int) -> bool:
    """Dropping rows copies the caches once (about one decoder step of memory traffic): do it in batches."""
    return done > 0 and done * 8 >= active


def _ban_repeated_ngrams(scores: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Ban every token that would complete an n-gram already in ``history`` (rows, length)."""
    length = history.shape[1]
    if length < n:
        return
    windows = history.unfold(1, n, 1)  # (rows, length - n + 1, n): every n-gram so far
    prefix = history[:, length - n + 1 :]  # the n - 1 tokens the next token would extend
    rows, starts = (windows[:, :, :-1] == prefix[:, None, :]).all(dim=2).nonzero(as_tuple=True)
    scores[rows, windows[rows, starts, -1]] = -math.inf


def _process_scores(
    scores: torch.Tensor, length: int, settings: GenerationSettings, history: Optional[torch.Tensor]
) -> torch.Tensor:
    """Apply the length and repetition constraints in place to next-token scores (rows, vocab).

    ``length`` counts the tokens so far, start token included; ``history`` (rows, length) holds them (needed
    only for ``no_repeat_ngram_size``). Applied in transformers' order.
    """
    if settings.no_repeat_ngram_size:
        _ban_repeated_ngrams(scores, history, settings.no_repeat_ngram_size)
    if settings.eos_token_ids and length < settings.min_length:
        scores[:, list(settings.eos_token_ids)] = -math.inf
    if settings.forced_bos_token_id is not None and length == 1:
        scores.fill_(-math.inf)
        scores[:, settings.forced_bos_token_id] = 0
    if settings.forced_eos_token_ids and length == settings.max_length - 1:
        scores.fill_(-math.inf)
        scores[:, list(settings.forced_eos_token_ids)] = 0
    return scores


def _is_eos(tokens: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    eos = torch.tensor(settings.eos_token_ids, dtype=tokens.dtype, device=tokens.device)
    return torch.isin(tokens, eos)


# ---- greedy ----------------------------------------------------------------------------------------------

def _greedy_search(model, encoded, mask, settings: GenerationSettings) -> torch.Tensor:
    batch, device = encoded.shape[0], encoded.device
    fill = settings.pad_token_id if settings.pad_token_id is not None else 0
    sequences = torch.full((batch, settings.max_length), fill, dtype=torch.long, device=device)
    sequences[:, 0] = settings.decoder_start_token_id
    run = _DecoderRun(model, encoded, mask, group=1)
    rows = torch.arange(batch, device=device)  # row of `sequences` behind each decoder row
    finished = torch.zeros(batch, dtype=torch.bool, device=device)  # still in the batch, but done
    last = sequences[:, 0]
    length = 1
    for step in range(1, settings.max_length):
        history = sequences[rows, :step] if settings.no_repeat_ngram_size else None
        scores = _process_scores(run.logits(last), step, settings, history)
        tokens = scores.argmax(dim=-1)
        if settings.eos_token_ids:
            tokens = tokens.masked_fill(finished, settings.pad_token_id)
            finished = finished | _is_eos(tokens, settings)
        sequences[rows, step] = tokens
        length = step + 1
        if length == settings.max_length or bool(finished.all()):
            break
        done = int(finished.sum())
        if _worth_compacting(done, rows.numel()):
            keep = (~finished).nonzero().flatten()
            run.keep_inputs(keep)
            rows, tokens, finished = rows[keep], tokens[keep], finished[keep]
        last = tokens
    return sequences[:, :length]


# ---- beam search -----------------------------------------------------------------------------------------

@dataclass
class _Hypotheses:
    """The ``num_beams`` best finished hypotheses of each input, best first: tokens, score, number of generated
    tokens, and whether the slot holds a hypothesis at all (empty slots score EMPTY_SCORE)."""

    tokens: torch.Tensor  # (inputs, beams, max_length)
    scores: torch.Tensor  # (inputs, beams)
    lengths: torch.Tensor
    filled: torch.Tensor

    @classmethod
    def empty(cls, batch: int, beams: int, max_length: int, fill: int, start: int, device) -> "_Hypotheses":
        tokens = torch.full((batch, beams, max_length), fill, dtype=torch.long, device=device)
        tokens[:, :, 0] = start
        return cls(
            tokens,
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


def _beam_search(model, encoded, mask, settings: GenerationSettings) -> torch.Tensor:
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
    start = settings.decoder_start_token_id
    stop_when_full = settings.early_stopping is True

    run = _DecoderRun(model, encoded, mask, group=beams)
    inputs = torch.arange(batch, device=device)  # input index of each active group
    running = torch.full((batch, beams, max_length), fill, dtype=torch.long, device=device)
    running[:, :, 0] = start
    # All beams start identical: only the first one may propose tokens at the first step.
    running_scores = torch.zeros((batch, beams), dtype=torch.float32, device=device)
    running_scores[:, 1:] = EMPTY_SCORE
    finished = _Hypotheses.empty(batch, beams, max_length, fill, start, device)
    improvable = torch.ones(batch, dtype=torch.bool, device=device)  # can a running beam still beat the worst?
    results = _Hypotheses.empty(batch, beams, max_length, fill, start, device)  # of inputs already dropped
    in_top = torch.arange(kept, device=device) < beams  # only the best `beams` candidates may finish
    last = running[:, :, 0].flatten()

    for step in range(1, max_length):
        active = inputs.numel()
        log_probs = F.log_softmax(run.logits(last), dim=-1)
        vocab = log_probs.shape[-1]
        log_probs = _process_scores(log_probs, step, settings, running.view(active * beams, max_length)[:, :step])
        totals = (log_probs.view(active, beams, vocab) + running_scores[:, :, None]).view(active, beams * vocab)
        top_scores, top_index = totals.topk(kept, dim=1)
        parent = torch.div(top_index, vocab, rounding_mode="floor")
        candidates = _take(running, parent)
        candidates[:, :, step] = top_index % vocab
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
        run.cache.reorder((parent + torch.arange(active, device=device)[:, None] * beams).flatten())
        last = running[:, :, step].flatten()

        improvable = improvable & _can_improve(running_scores[:, 0], finished.scores, step, settings)
        full = finished.filled.all(dim=1)
        done = ~improvable | (full & stop_when_full)
        if bool(done.all()):
            break
        if _worth_compacting(int(done.sum()), active):
            results.store(inputs[done], finished.select(done))
            keep = (~done).nonzero().flatten()
            run.keep_inputs(keep)
            inputs, running, running_scores = inputs[keep], running[keep], running_scores[keep]
            improvable = improvable[keep]
            finished = finished.select(keep)
            last = running[:, :, step].flatten()

    results.store(inputs, finished)
    count = settings.num_return_sequences
    length = 1 + int(results.lengths[:, :count].max())
    return results.tokens[:, :count, :length].reshape(batch * count, length)


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
