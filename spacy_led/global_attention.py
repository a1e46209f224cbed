"""Which input pieces get LED's *global* attention, chosen on the spaCy Doc.

LED's encoder attends locally (a sliding window) except at the few positions marked global: those see,
and are seen by, the whole input. Which positions deserve it depends on the task, and HF's advice is
global attention on the first ``<s>`` for summarization and classification, and on every question token
for question answering. A *strategy* makes that choice on the Doc, where spaCy's annotations (sentences,
entities, spans) are at hand; the components then map its choice onto BPE pieces through the tokenizer's
character offsets, so a strategy never needs to know about BPE.

A strategy is any ``Callable[[Doc], ...]`` returning a :class:`GlobalAttention` (character ranges of
``doc.text`` plus the ``<s>`` flag) or, more simply, an iterable of spaCy ``Token``/``Span`` objects or
token indices (see :func:`to_global_attention`). Components name their strategy in the config through
spaCy's ``misc`` registry; this module registers three:

* ``spacy_led.first_token.v1``: the ``<s>`` piece only (HF's default for summarization/classification).
* ``spacy_led.sentence_starts.v1``: ``<s>`` and the first word of every sentence, so every sentence has a
  piece that sees the whole document (helps long-document summaries).
* ``spacy_led.question_tokens.v1``: ``<s>`` and every token of every question sentence.

Your own strategy
-----------------
Register a function that takes the config's settings and *returns* the strategy::

    import spacy

    @spacy.registry.misc("my_entities.v1")
    def make_entity_strategy(labels: list = ["PERSON", "ORG"]):
        def strategy(doc):
            return [ent for ent in doc.ents if ent.label_ in labels]   # Spans: every piece of each entity
        return strategy

and name it in the component's config::

    [components.summarizer.global_attention]
    @misc = "my_entities.v1"
    labels = ["PERSON"]

The registration must have run before the config is resolved: pass the file to ``spacy train ...
--code my_strategies.py``, import it before ``spacy.load``, or (in a package) add an entry point
``my_entities.v1 = my_package.strategies:make_entity_strategy`` under ``spacy_misc``. Return
``GlobalAttention`` yourself for character ranges that are not tokens, or to switch the ``<s>`` piece
on (returning tokens leaves it off). A strategy defined at module level (or a ``functools.partial`` of one) stays picklable,
which ``nlp.pipe(n_process=...)`` needs on platforms that spawn processes; a closure as above is fine
otherwise.

This module imports no torch and stays cheap: spaCy imports every registered module at startup.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy
from spacy.attrs import IDX, IS_SPACE, LENGTH, ORTH, SPACY
from spacy.tokens import Doc, Span, Token
from spacy.util import registry

__all__ = [
    "GlobalAttention",
    "GlobalAttentionStrategy",
    "FALLBACKS",
    "to_global_attention",
    "global_mask_for_pieces",
    "sentence_spans",
    "question_sentences",
    "FirstToken",
    "SentenceStarts",
    "QuestionTokens",
    "make_first_token_strategy",
    "make_sentence_starts_strategy",
    "make_question_tokens_strategy",
]

#: What a component calls: the Doc in, a GlobalAttention (or tokens, spans, token indices) out.
GlobalAttentionStrategy = Callable[[Doc], Any]

#: What to do with a Doc that has no sentence boundaries.
FALLBACKS = ("error", "punctuation")

_ACCEPTED = (
    "a GlobalAttention, or an iterable of spaCy Token / Span objects or int token indices of the Doc "
    "(e.g. [doc[0]], list(doc.ents), [0, 5])"
)

# A sentence ends at . ! ? followed by whitespace or the end of the text (so "3.14", "e.g.x" and
# "a?b=c" do not end one), or at the full-width 。！？, which Chinese and Japanese write without a
# space after them. Closing quotes and brackets right after the mark belong to the ending sentence.
_CLOSERS = "\"'\u201d\u2019\u00bb)\\]\u300d\u300f\uff09"
_SENTENCE_END = re.compile(rf"[.!?]+[{_CLOSERS}]*(?=\s|\Z)|[\u3002\uff01\uff1f]+[{_CLOSERS}]*")
_QUESTION_END = re.compile(rf"[?\uff1f][\s{_CLOSERS}]*\Z")


@dataclass
class GlobalAttention:
    """The global-attention choice for one Doc, independent of any tokenization.

    ``char_spans`` are ``(start, end)`` character ranges of ``doc.text``: every piece of the encoded text
    that overlaps one gets global attention (so a word split into several BPE pieces, or an emoji spread
    over several byte pieces, is marked whole). A zero-width ``(a, a)`` marks the piece holding character
    ``a``. ``bos`` marks the ``<s>`` piece the tokenizer adds, which has no characters of its own.
    """

    bos: bool = False
    char_spans: List[Tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.bos, bool):
            raise TypeError(f"GlobalAttention.bos must be a bool, got {type(self.bos).__name__} {self.bos!r}")
        if isinstance(self.char_spans, (str, bytes, Mapping)) or not isinstance(self.char_spans, Iterable):
            raise TypeError(
                f"GlobalAttention.char_spans must be a list of (start, end) character offsets, got "
                f"{type(self.char_spans).__name__}"
            )
        self.char_spans = [_check_char_span(span) for span in self.char_spans]


def _check_char_span(span: Any) -> Tuple[int, int]:
    if type(span) is tuple and len(span) == 2:  # the usual (int, int): checked without the slow ABC test
        start, end = span
        if type(start) is int and type(end) is int and 0 <= start <= end:
            return span
    try:
        start, end = span
    except (TypeError, ValueError):
        raise TypeError(
            f"GlobalAttention.char_spans must hold (start, end) pairs of character offsets, got {span!r}"
        ) from None
    if not _is_int(start) or not _is_int(end):
        raise TypeError(f"GlobalAttention char span {span!r} must hold two ints (character offsets)")
    start, end = int(start), int(end)
    if not 0 <= start <= end:
        raise ValueError(
            f"GlobalAttention char span {span!r} is not a character range: need 0 <= start <= end"
        )
    return start, end


def _is_int(value: Any) -> bool:
    # bool is an int to Python, but True as "token 1" or "offset 1" is always a mistake.
    return isinstance(value, Integral) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def to_global_attention(result: Any, doc: Doc) -> GlobalAttention:
    """Normalise what a strategy returned for ``doc`` into a :class:`GlobalAttention`.

    Strategies may return the convenient thing (``doc.ents``, a list of tokens, token indices); this is
    the single place that turns it into character ranges. Tokens become their text's range, spans
    theirs (from first to last character, whitespace inside included), and ints index ``doc`` as
    ``doc[i]`` does (negative ones from the end). ``bos`` stays False unless a GlobalAttention says so.
    Tokens and spans of another Doc, indices out of range and char spans beyond the text are refused:
    they would silently mark the wrong pieces.
    """
    if isinstance(result, GlobalAttention):
        text_length = text_length_of(doc)
        outside = [span for span in result.char_spans if span[1] > text_length]
        if outside:
            raise ValueError(
                f"The global-attention strategy returned char spans beyond the Doc's text (length "
                f"{text_length}), e.g. {outside[0]}: they must be character offsets into doc.text"
            )
        return result
    if isinstance(result, (Token, Span)):  # one item: a Span iterates its tokens, a Token not at all
        result = [result]
    if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        raise TypeError(f"The global-attention strategy returned {_describe(result)}; expected {_ACCEPTED}.")
    spans: List[Tuple[int, int]] = []
    for position, item in enumerate(result):
        if isinstance(item, Token):
            _check_same_doc(item, doc, position)
            spans.append((item.idx, item.idx + len(item)))
        elif isinstance(item, Span):
            _check_same_doc(item, doc, position)
            spans.append((item.start_char, item.end_char))
        elif _is_int(item):
            index = int(item)
            if not -len(doc) <= index < len(doc):
                raise IndexError(
                    f"The global-attention strategy returned token index {index} at position {position}, "
                    f"but the Doc has {len(doc)} tokens"
                )
            token = doc[index]
            spans.append((token.idx, token.idx + len(token)))
        else:
            raise TypeError(
                f"The global-attention strategy returned a {type(result).__name__} holding "
                f"{_describe(item)} at position {position}; expected {_ACCEPTED}. For character ranges "
                f"return GlobalAttention(char_spans=[(start, end), ...])."
            )
    return GlobalAttention(bos=False, char_spans=spans)


def text_length_of(doc: Doc) -> int:
    """``len(doc.text)`` without building the text (``doc.text`` joins every token: a cost per token, per call)."""
    if not len(doc):
        return 0
    last = doc[-1]
    return last.idx + len(last.text_with_ws)


def doc_text(doc: Doc) -> str:
    """``doc.text`` from the Doc's arrays: ``doc.text`` makes a Token object per token to join their
    ``text_with_ws``; here each distinct word's string is looked up once and the join needs no objects (the
    same text, in about a third of the time on long documents)."""
    if not len(doc):
        return ""
    rows = doc.to_array([ORTH, SPACY])  # per token: its text's hash, whether a space follows it
    words, which = numpy.unique(rows[:, 0], return_inverse=True)
    strings = doc.vocab.strings
    table = [strings[int(word)] for word in words]
    table += [word + " " for word in table]  # the word followed by its space: index + len(words)
    entries = which.reshape(-1) + len(words) * rows[:, 1].astype(numpy.int64)
    return "".join(map(table.__getitem__, entries.tolist()))


def _check_same_doc(item: Token | Span, doc: Doc, position: int) -> None:
    if item.doc is not doc:
        raise ValueError(
            f"The global-attention strategy returned {type(item).__name__} {item.text[:40]!r} at position "
            f"{position} from another Doc than the one it was given; its offsets would point into the "
            f"wrong text"
        )


def global_mask_for_pieces(
    attention: GlobalAttention,
    offsets: Sequence[Tuple[int, int]],
    special_tokens_mask: Sequence[int],
    sequence_ids: Optional[Sequence[Optional[int]]] = None,
    segment: int = 0,
    char_shift: int = 0,
) -> List[int]:
    """LED's ``global_attention_mask`` row for one encoding: 1 where a piece gets global attention.

    A text piece is marked when it belongs to ``segment`` (``sequence_ids[i] == segment``: 0 for the
    first text of a pair, 1 for the second; without ``sequence_ids``, every non-special piece) and its
    character range ``(s, e)`` overlaps a span ``(a, b)`` (``s < b and a < e``; a zero-width span marks
    the piece with ``s <= a < e``). Pieces the tokenizer gives zero width (trimmed spaces) overlap
    nothing unless strictly inside a span. ``char_shift`` is subtracted from the spans first: when a
    window of a long Doc starting at character ``char_shift`` is encoded on its own, its offsets count
    from the window. With ``attention.bos`` the first piece is marked and must be the template's
    ``<s>`` (``special_tokens_mask[0] == 1``).

    Sorted, merged spans and one binary search per piece (numpy, all pieces at once): O((pieces + spans)
    log spans), so 16k pieces and thousands of spans take milliseconds.
    """
    if not isinstance(attention, GlobalAttention):
        raise TypeError(
            f"global_mask_for_pieces needs a GlobalAttention, got {type(attention).__name__}; convert a "
            f"strategy's result with to_global_attention(result, doc) first"
        )
    n = len(offsets)
    if len(special_tokens_mask) != n:
        raise ValueError(
            f"offsets has {n} entries but special_tokens_mask {len(special_tokens_mask)}: they must describe "
            f"the same pieces"
        )
    if sequence_ids is None:
        if segment != 0:
            raise ValueError(
                f"segment={segment} needs sequence_ids to tell the two texts of a pair apart; pass the "
                f"encoding's sequence_ids"
            )
    elif len(sequence_ids) != n:
        raise ValueError(f"offsets has {n} entries but sequence_ids {len(sequence_ids)}")
    mask = [0] * n
    if n == 0:
        return mask
    if attention.bos:
        if not special_tokens_mask[0]:
            raise ValueError(
                "GlobalAttention.bos is set but the first piece is not a special token, so there is no <s> "
                "to mark: encode with add_special_tokens=True, or mark the <s> you add yourself"
            )
        mask[0] = 1
    starts, ends, points = _merged_spans(attention.char_spans, char_shift)
    if not starts and not points:
        return mask
    # All pieces at once (numpy's binary search; a Python loop per piece cost more than the rest of the mapping).
    pieces = numpy.asarray(offsets, dtype=numpy.int64).reshape(n, 2)
    s, e = pieces[:, 0], pieces[:, 1]
    hit = numpy.zeros(n, dtype=bool)
    if starts:
        # The span starting last before the piece ends is the only candidate: merged spans are
        # disjoint, so every earlier one also ends earlier.
        k = numpy.searchsorted(numpy.asarray(starts, dtype=numpy.int64), e, side="left") - 1
        hit |= (k >= 0) & (numpy.asarray(ends, dtype=numpy.int64)[numpy.maximum(k, 0)] > s)
    if points:
        point_array = numpy.asarray(points, dtype=numpy.int64)
        k = numpy.searchsorted(point_array, s, side="left")
        hit |= (k < len(points)) & (point_array[numpy.minimum(k, len(points) - 1)] < e)
    hit &= ~numpy.asarray(special_tokens_mask, dtype=bool)
    if sequence_ids is not None:
        hit &= numpy.array([sequence_id == segment for sequence_id in sequence_ids], dtype=bool)
    marked = hit.astype(numpy.int64).tolist()
    marked[0] |= mask[0]
    return marked


def _merged_spans(
    char_spans: Iterable[Tuple[int, int]], char_shift: int
) -> Tuple[List[int], List[int], List[int]]:
    """Shifted spans as sorted, disjoint ranges (as start and end lists) plus sorted zero-width points.

    Only strictly overlapping ranges are merged: touching ones stay apart, which keeps the overlap test
    exact for zero-width pieces at the touching point.
    """
    starts: List[int] = []
    ends: List[int] = []
    points: List[int] = []
    for a, b in sorted(char_spans):
        a -= char_shift
        b -= char_shift
        if a == b:
            points.append(a)
        elif ends and a < ends[-1]:
            ends[-1] = max(ends[-1], b)
        else:
            starts.append(a)
            ends.append(b)
    return starts, ends, points


# ------------------------------------------------------------------------------------------- sentences
def _check_fallback(fallback: Any, who: str) -> str:
    if fallback not in FALLBACKS:
        raise ValueError(
            f"{who}: fallback={fallback!r} is not one of {', '.join(map(repr, FALLBACKS))}. 'error' raises "
            f"on a Doc without sentence boundaries; 'punctuation' splits it after . ! ? 。！？ instead"
        )
    return fallback


def _check_bool(value: Any, name: str, who: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{who}: {name} must be true or false, got {value!r}")
    return value


def sentence_spans(
    doc: Doc, fallback: str = "error", *, who: str = "spacy_led", text: Optional[str] = None
) -> List[Span]:
    """The Doc's sentences: ``doc.sents`` when a component set them, else per ``fallback``.

    ``"error"`` raises a ValueError that names the fix; ``"punctuation"`` splits after ``. ! ?``
    followed by whitespace or the end, and after ``。！？`` anywhere (Chinese and Japanese put no space
    after them); closing quotes and brackets stay with the ending sentence, and the Doc is not changed.
    Sentences are whole tokens, beginning at the first word after the punctuation. Where the
    punctuation falls inside a token (spaCy's English tokenizer keeps "…です。我们…" as one token), that
    token begins the new sentence; a Chinese or Japanese pipeline (``spacy.blank("zh")`` splits
    characters) or a senter splits such text properly.
    ``who`` names the caller in the error; ``text`` is ``doc.text`` when the caller has it already
    (``doc.text`` joins every token each time it is read).
    """
    _check_fallback(fallback, who)
    if len(doc) == 0:
        return []
    if doc.has_annotation("SENT_START"):
        return list(doc.sents)
    if fallback == "error":
        raise ValueError(
            f"{who} needs sentence boundaries, but the Doc has none (doc.has_annotation('SENT_START') is "
            f"False). Add a component that sets them before the LED component, e.g. "
            f"nlp.add_pipe(\"sentencizer\", before=\"<led component name>\") (rules, no training), or a trained "
            f"\"senter\" or \"parser\"; or set fallback = \"punctuation\" in the global_attention config to "
            f"split after . ! ? 。！？ without one."
        )
    return _punctuation_sentences(doc, doc.text if text is None else text)


def _punctuation_sentences(doc: Doc, text: str) -> List[Span]:
    token_ends = doc.to_array([IDX, LENGTH]).sum(axis=1).tolist()  # token.idx + len(token), for every token
    starts = [0]
    for match in _SENTENCE_END.finditer(text):
        # First token ending after the boundary: the one holding it, or (between tokens) the next
        # one; whitespace tokens stay with the sentence they follow, so sentences start with a word.
        first = bisect_right(token_ends, match.end())
        while first < len(doc) and doc[first].is_space:
            first += 1
        if first < len(doc) and first > starts[-1]:
            starts.append(first)
    starts.append(len(doc))
    return [doc[a:b] for a, b in zip(starts, starts[1:])]


def question_sentences(doc: Doc, fallback: str = "punctuation") -> List[Span]:
    """The sentences of ``doc`` that are questions: their text ends with ``?`` or ``？`` (closing quotes,
    brackets and whitespace after it allowed). Sentences as :func:`sentence_spans` finds them."""
    return _questions(doc, fallback, "question_sentences")


def _questions(doc: Doc, fallback: str, who: str) -> List[Span]:
    """``question_sentences`` naming ``who`` in its errors; the Doc's text is built once."""
    text = doc_text(doc)
    return [sent for sent in sentence_spans(doc, fallback, who=who, text=text) if _is_question(text, sent)]


def _is_question(text: str, sentence: Span) -> bool:
    """Whether ``sentence`` (of the Doc whose text is ``text``) ends with a question mark: the test on
    ``sentence.text`` without building it (``\\Z`` matches at ``endpos``)."""
    return _QUESTION_END.search(text, sentence.start_char, sentence.end_char) is not None


def _first_word(sentence: Span) -> Optional[Token]:
    return next((token for token in sentence if not token.is_space), None)


# ------------------------------------------------------------------------------------------ strategies
@dataclass(frozen=True)
class FirstToken:
    """Global attention on ``<s>`` only: what LED was fine-tuned with for summarization and classification."""

    def __call__(self, doc: Doc) -> GlobalAttention:
        return GlobalAttention(bos=True)


@dataclass(frozen=True)
class SentenceStarts:
    """Global attention on the first non-space token of every sentence (and ``<s>``)."""

    include_first_token: bool = True
    fallback: str = "error"

    def __post_init__(self) -> None:
        _check_bool(self.include_first_token, "include_first_token", _SENTENCE_STARTS)
        _check_fallback(self.fallback, _SENTENCE_STARTS)

    def __call__(self, doc: Doc) -> GlobalAttention:
        firsts = (_first_word(sent) for sent in sentence_spans(doc, self.fallback, who=_SENTENCE_STARTS))
        spans = [(token.idx, token.idx + len(token)) for token in firsts if token is not None]
        return GlobalAttention(bos=self.include_first_token, char_spans=spans)


@dataclass(frozen=True)
class QuestionTokens:
    """Global attention on every (non-space) token of every question sentence (and ``<s>``): HF's
    recommendation for question answering, found on the Doc instead of given as a separate text."""

    include_first_token: bool = True
    fallback: str = "punctuation"

    def __post_init__(self) -> None:
        _check_bool(self.include_first_token, "include_first_token", _QUESTION_TOKENS)
        _check_fallback(self.fallback, _QUESTION_TOKENS)

    def __call__(self, doc: Doc) -> GlobalAttention:
        questions = _questions(doc, self.fallback, _QUESTION_TOKENS)
        # (idx, length, is_space) of every token, read at once rather than through a Token object each
        tokens = doc.to_array([IDX, LENGTH, IS_SPACE]).tolist() if questions else []
        spans = [
            (idx, idx + length)
            for sent in questions
            for idx, length, is_space in tokens[sent.start : sent.end]
            if not is_space
        ]
        return GlobalAttention(bos=self.include_first_token, char_spans=spans)


_FIRST_TOKEN = "spacy_led.first_token.v1"
_SENTENCE_STARTS = "spacy_led.sentence_starts.v1"
_QUESTION_TOKENS = "spacy_led.question_tokens.v1"


@registry.misc(_FIRST_TOKEN)
def make_first_token_strategy() -> GlobalAttentionStrategy:
    """The strategy marking ``<s>`` only."""
    return FirstToken()


@registry.misc(_SENTENCE_STARTS)
def make_sentence_starts_strategy(
    include_first_token: bool = True, fallback: str = "error"
) -> GlobalAttentionStrategy:
    """The strategy marking each sentence's first word; ``fallback`` for Docs without sentences
    (``"error"`` or ``"punctuation"``). Errors in the settings surface when the config is resolved."""
    return SentenceStarts(include_first_token=include_first_token, fallback=fallback)


@registry.misc(_QUESTION_TOKENS)
def make_question_tokens_strategy(
    include_first_token: bool = True, fallback: str = "punctuation"
) -> GlobalAttentionStrategy:
    """The strategy marking every token of every question; ``fallback`` for Docs without sentences."""
    return QuestionTokens(include_first_token=include_first_token, fallback=fallback)
