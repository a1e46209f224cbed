"""The BPE pieces (ids and character offsets) of many long texts, each distinct chunk of them encoded once.

Why: the components tokenize whole documents, and most of that time is ``tokenizers``' byte-level
pre-tokenizer (the GPT-2 split regex, then the byte mapping of every pre-token with its alignments), about 0.3
s of CPU for 80k pieces; the BPE merges themselves are cached. Long texts repeat themselves: the same words
with the same punctuation come back again and again, so encoding each distinct chunk once and copying its
pieces wherever it occurs does a fraction of that work, with the very same pieces. How large a fraction
depends on the text: in benchmarks/bench_pipe.py's documents (a few dozen words) 281 of 72k chunks are
distinct and tokenizing takes a fifth of the time (0.08 s of CPU instead of 0.38, the rest is splitting and
copying); in English prose (20 texts of 26k characters of vim's user manual) a fifth of the chunks are
distinct, and it takes about half.

Why the pieces are the same: a chunk ends before every plain space (U+0020) that follows a printable ASCII
character other than the space (``!`` to ``~``). The byte-level pre-tokenizer splits text with GPT-2's regex
``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``, whose matches tile the
text; no match holds a character that is not whitespace followed by a whitespace one (whitespace is only ever
a match of its own or the single space leading a match), so every match ends at or before such a cut, and none
runs across it. Every match is decided by the characters from its start up to the first one that cannot
extend it, and the lookahead ``(?!\\S)`` only follows whitespace, which inside a chunk always has its chunk's
last character after it (only a text's last chunk can end in whitespace, at the end of the text either way),
so a chunk splits alone as it does inside its text. The byte mapping, the BPE merges and the trimming of the
offsets (``RobertaProcessing(trim_offsets=True)``) then work on one pre-token or piece at a time; a piece's
offsets in the text are its offsets in the chunk plus the chunk's first character.

What would break that, and takes the plain path instead (the whole text in one call): ``add_prefix_space``
(the space is added to the start of the whole text only, and the offset trimming treats a piece at offset 0
differently), a text holding an added token (``<s>``, ``<mask>`` ...: they are split out before
pre-tokenizing, and one that strips the spaces after it would take them from the next chunk), and BPE dropout
(random pieces). The tests check the
pieces against the plain path on texts made to catch a wrong cut (tests/test_bpe_chunks.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain, count
from typing import TYPE_CHECKING, List, Sequence, Tuple

import numpy

if TYPE_CHECKING:  # the components import this module at startup; tokenizers is imported with the tokenizer
    from .bpe import ByteLevelBPE

__all__ = ["Pieces", "encode_pieces"]

# Zero-width: the cut sits between the printable ASCII character and the space, which starts the next chunk.
# The lookahead comes first because it fails at once on most characters.
_CUT = re.compile(r"(?= )(?<=[!-~])")


@dataclass
class Pieces:
    """One text's BPE pieces without special tokens: what the components need of its encoding."""

    ids: List[int]
    offsets: List[Tuple[int, int]]  # character offsets of the pieces in the text

    def __len__(self) -> int:
        return len(self.ids)


def encode_pieces(tokenizer: ByteLevelBPE, texts: Sequence[str]) -> List[Pieces]:
    """The pieces of each text, as ``tokenizer.encode_batch(texts, add_special_tokens=False)`` gives them, from
    one call of the tokenizer over the distinct chunks of all the texts (see the module docstring)."""
    backend = tokenizer.backend_tokenizer
    texts = list(texts)
    if tokenizer.add_prefix_space or getattr(backend.model, "dropout", None):
        return _encode_whole(backend, texts)
    added = [token.content for token in backend.get_added_tokens_decoder().values()]
    whole = [i for i, text in enumerate(texts) if any(content in text for content in added)]
    results: List[Pieces] = [None] * len(texts)  # type: ignore[list-item]
    for i, pieces in zip(whole, _encode_whole(backend, [texts[i] for i in whole]), strict=True):
        results[i] = pieces
    chunked = [i for i in range(len(texts)) if results[i] is None]
    chunks_per_text = [_CUT.split(texts[i]) for i in chunked]
    # chunk text -> its index among the distinct chunks, in order of first occurrence (no Python loop per chunk)
    distinct = dict(zip(dict.fromkeys(chain.from_iterable(chunks_per_text)), count()))
    chunk_indices = []
    for chunks in chunks_per_text:
        indices = numpy.fromiter(map(distinct.__getitem__, chunks), dtype=numpy.int64, count=len(chunks))
        lengths = numpy.fromiter(map(len, chunks), dtype=numpy.int64, count=len(chunks))
        chunk_indices.append((indices, numpy.cumsum(lengths) - lengths))
    encodings = backend.encode_batch(list(distinct), add_special_tokens=False)
    counts = numpy.fromiter(map(len, encodings), dtype=numpy.int64, count=len(encodings))
    firsts = numpy.cumsum(counts) - counts  # each distinct chunk's first piece in the flat arrays
    flat_ids = numpy.fromiter((i for e in encodings for i in e.ids), dtype=numpy.int64, count=int(counts.sum()))
    flat_offsets = numpy.array([o for e in encodings for o in e.offsets], dtype=numpy.int64).reshape(-1, 2)
    for i, (indices, char_starts) in zip(chunked, chunk_indices, strict=True):
        results[i] = _gather(indices, char_starts, counts, firsts, flat_ids, flat_offsets)
    return results


def _gather(indices, char_starts, counts, firsts, flat_ids, flat_offsets) -> Pieces:
    """One text's pieces: those of its chunks (``indices`` into the distinct chunks) one after the other, the
    offsets moved by each chunk's first character (``char_starts``)."""
    per_chunk = counts[indices]
    total = int(per_chunk.sum())
    # Piece k of the text is piece (k - first piece of its chunk in the text) of its distinct chunk.
    chunk_of_piece = numpy.repeat(numpy.arange(len(indices)), per_chunk)
    position = numpy.arange(total) - (numpy.cumsum(per_chunk) - per_chunk)[chunk_of_piece]
    source = firsts[indices][chunk_of_piece] + position
    offsets = flat_offsets[source] + char_starts[chunk_of_piece, None]
    return Pieces(flat_ids[source].tolist(), list(zip(offsets[:, 0].tolist(), offsets[:, 1].tolist())))


def _encode_whole(backend, texts: List[str]) -> List[Pieces]:
    """The plain path: each text in one piece, through the tokenizer's own ``encode_batch``."""
    if not texts:
        return []
    return [Pieces(e.ids, e.offsets) for e in backend.encode_batch(texts, add_special_tokens=False)]
