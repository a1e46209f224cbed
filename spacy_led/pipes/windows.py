"""Cutting tokenized documents into model windows and grouping windows into batches.

Pure functions of ids, offsets and limits: no model, no tokenizer object, no spaCy, so every rule about long
documents (``overflow``), overlaps and the batch token budget is tested on its own (tests/test_windows.py).
The pipes tokenize a Doc into an ``Encoded`` and hand it here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy

logger = logging.getLogger("spacy_led")

OVERFLOW_MODES = ("chunk", "truncate", "error")


class DocumentTooLong(ValueError):
    """A document longer than the model reads, with ``overflow="error"``."""


@dataclass
class Encoded:
    """A document's tokenization, computed once and shared by every window cut from it."""

    ids: List[int]  # document pieces, no special tokens
    offsets: List[Tuple[int, int]]  # character offsets of the pieces in the document text
    global_mask: List[int]  # per document piece
    bos_global: bool  # whether ``<s>`` gets global attention


@dataclass
class Window:
    """One model input cut from a document: ``ids`` with special tokens, and where the pieces sit in it."""

    doc_index: int
    ids: List[int]
    global_mask: List[int]
    content_start: int  # index in ids of the first document piece
    offsets: List[Tuple[int, int]]  # character offsets (in the document text) of the window's pieces, in order
    extra: Dict[str, Any] = field(default_factory=dict)  # task data (e.g. the question of a QA window)
    piece_start: int = 0  # index of the window's first document piece in the whole document

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class WindowLimits:
    """What a window may hold and what to do with a document that does not fit."""

    max_positions: int  # model positions per input, special tokens included
    overflow: str = "chunk"
    overlap: int = 0  # pieces shared by consecutive windows under "chunk"
    bos_token_id: int = 0
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow={self.overflow!r} is not one of {OVERFLOW_MODES}.")
        if self.overlap < 0:
            raise ValueError(f"chunk_overlap must not be negative; got {self.overlap}.")


def window_starts(total: int, room: int, overlap: int) -> List[int]:
    """First piece of each window over ``total`` pieces, ``room`` per window, consecutive windows sharing
    ``overlap`` pieces (at least one new piece per window): windows every ``room - overlap`` pieces until one
    reaches the document's end (the last may be shorter)."""
    if total <= room:
        return [0]
    step = max(1, room - overlap)
    return list(range(0, total - room + step, step))


def cut(
    doc_index: int,
    encoded: Encoded,
    limits: WindowLimits,
    *,
    prefix: Sequence[int] = (),
    prefix_global: Sequence[int] = (),
    extra: Optional[Dict[str, Any]] = None,
    source: str = "the model",
) -> List[Window]:
    """Windows of ``<s> prefix document-part </s>`` that fit ``limits.max_positions``, following
    ``limits.overflow``: one window, a truncated window (logged), several windows (``"chunk"``), or
    ``DocumentTooLong``. ``prefix`` are ids placed before the document pieces (a QA question with its
    separators); ``source`` names the reader in messages (the component)."""
    if len(prefix_global) != len(prefix):
        raise ValueError(f"prefix_global has {len(prefix_global)} entries for {len(prefix)} prefix ids.")
    room = limits.max_positions - 2 - len(prefix)
    if room < 1:
        raise DocumentTooLong(
            f"the question takes {len(prefix)} pieces and leaves no room for the document in "
            f"{limits.max_positions} positions: shorten the question."
        )
    total = len(encoded.ids)
    starts = [0]
    if total > room:
        if limits.overflow == "error":
            raise DocumentTooLong(
                f"document {doc_index} has {total} BPE pieces but {source} reads at most {room} per input "
                f"(max positions {limits.max_positions}): set overflow='chunk' to process it in windows, or "
                f"overflow='truncate' to cut it."
            )
        if limits.overflow == "truncate":
            logger.warning(
                "%s: document %d has %d BPE pieces; truncated to %d, %d pieces (from character %d on) dropped.",
                source, doc_index, total, room, total - room, encoded.offsets[room][0],
            )
        else:
            starts = window_starts(total, room, limits.overlap)
    windows = []
    for start in starts:
        end = min(start + room, total)
        ids = [limits.bos_token_id, *prefix, *encoded.ids[start:end], limits.eos_token_id]
        glob = [int(encoded.bos_global), *prefix_global, *encoded.global_mask[start:end], 0]
        windows.append(
            Window(doc_index, ids, glob, 1 + len(prefix), encoded.offsets[start:end], dict(extra or {}), start)
        )
    return windows


def batches(windows: Sequence[Window], token_budget: int) -> Iterator[List[Window]]:
    """Length-sorted batches whose padded size (rows x longest row) stays within ``token_budget``; a single
    window longer than the budget gets a batch of its own. Sorting keeps padding small; callers put outputs
    back in input order."""
    if token_budget < 1:
        raise ValueError(f"batch_token_budget must be positive; got {token_budget}.")
    batch: List[Window] = []
    for window in sorted(windows, key=len):
        if batch and (len(batch) + 1) * len(window) > token_budget:
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def padded(windows: Sequence[Window], pad_token_id: int) -> Dict[str, Any]:
    """``input_ids``, ``attention_mask`` and ``global_attention_mask`` (torch long tensors on the CPU) of a
    batch, right-padded to its longest window. Filled in numpy, which reads a list of ints several times
    faster than ``torch.tensor`` does (thousands of pieces per window), and handed to torch without a copy."""
    import torch

    length = max(len(w) for w in windows)
    ids = numpy.full((len(windows), length), pad_token_id, dtype=numpy.int64)
    mask = numpy.zeros((len(windows), length), dtype=numpy.int64)
    glob = numpy.zeros((len(windows), length), dtype=numpy.int64)
    for row, window in enumerate(windows):
        n = len(window)
        ids[row, :n] = window.ids
        mask[row, :n] = 1
        glob[row, :n] = window.global_mask
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "global_attention_mask": torch.from_numpy(glob)}
