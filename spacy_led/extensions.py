"""The Doc and Span extensions spacy-led reads and writes, registered in one place.

Components, corpus readers and scorers all call ``ensure_extensions`` (or ``ensure_doc_attr`` for a
user-configured name), so whichever runs first registers them the same way.

``doc._.answers`` (question -> Span or None) is computed from plain character offsets kept in
``doc.user_data``: Span objects stored in ``user_data`` would make ``Doc.copy``, ``Doc.to_bytes``, ``DocBin`` and
``nlp.pipe(n_process=...)`` fail. Plain values (``doc._.summary``, ``doc._.summary_score``, ...) live in
``doc.user_data`` too, so ``Doc.to_bytes`` and ``DocBin(store_user_data=True)`` keep them. ``span._.question`` and ``span._.answer_score`` are keyed by character offsets
by spaCy itself, so they survive the same round trips.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

from spacy.tokens import Doc, Span

ANSWERS_KEY = "spacy_led.answers"
ANSWER_LABEL = "ANSWER"


def _get_answers(doc: Doc) -> Optional[Dict[str, Optional[Span]]]:
    stored = doc.user_data.get(ANSWERS_KEY)
    if stored is None:
        return None
    return {
        question: (None if offsets is None else doc.char_span(offsets[0], offsets[1], label=ANSWER_LABEL,
                                                               alignment_mode="expand"))
        for question, offsets in stored.items()
    }


def _set_answers(doc: Doc, answers: Optional[Mapping[str, Union[Span, Tuple[int, int], None]]]) -> None:
    if answers is None:
        doc.user_data.pop(ANSWERS_KEY, None)
        return
    stored = {}
    for question, answer in answers.items():
        if answer is None:
            stored[str(question)] = None
        elif isinstance(answer, Span):
            stored[str(question)] = [answer.start_char, answer.end_char]
        else:
            start, end = answer
            stored[str(question)] = [int(start), int(end)]
    doc.user_data[ANSWERS_KEY] = stored


def ensure_doc_attr(name: str) -> None:
    """A plain Doc extension with default None (summaries, labels, questions, gold answers)."""
    if not Doc.has_extension(name):
        Doc.set_extension(name, default=None)


def ensure_extensions() -> None:
    for name in ("summary", "summary_score", "label", "questions", "gold_answers"):
        ensure_doc_attr(name)
    if not Doc.has_extension("answers"):
        Doc.set_extension("answers", getter=_get_answers, setter=_set_answers)
    for name in ("question", "answer_score"):
        if not Span.has_extension(name):
            Span.set_extension(name, default=None)
