"""``led_qa``: extractive answers as spans of the Doc.

Questions come from ``doc._.questions`` (a list of strings), else from the component config (the same
questions for every Doc, for extraction), else from the Doc itself: its question sentences, answered from the
rest of the Doc. Each question is paired with the Doc as ``<s> question </s></s> document </s>`` with global
attention on the question (transformers' recommendation for QA); documents longer than the model are searched
window by window (``overflow="chunk"``, windows overlapping by ``chunk_overlap`` pieces) and the best answer
wins. Answers are token-aligned ``Span``s in ``doc.spans[spans_key]`` carrying ``span._.question`` and
``span._.answer_score``, and ``doc._.answers`` maps each question to its Span, or None where the model prefers
no answer (SQuAD 2.0's rule: the ``<s>`` position's score beats every span by ``no_answer_threshold``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example
from thinc.api import Model

from ..extensions import ANSWER_LABEL, ensure_extensions
from .base import LEDPipe, Window
from .settings import QASettings

if TYPE_CHECKING:
    from ..bpe_chunks import Pieces


@dataclass
class Candidate:
    """The best answer of one window: character range in the Doc and scores."""

    question: str
    start_char: int
    end_char: int
    score: float  # p(start) * p(end) within the window
    margin: float  # best span logit sum minus the no-answer (<s>) logit sum


class LEDQuestionAnswerer(LEDPipe):
    task = "question_answering"
    settings_class = QASettings

    def __init__(self, vocab, model: Model, name: str = "led_qa", **kwargs: Any) -> None:
        super().__init__(vocab, model, name, **kwargs)
        ensure_extensions()

    # ---- which questions, and their windows --------------------------------------------------------------
    def questions_for(self, doc: Doc) -> List[Tuple[str, Optional[Tuple[int, int]]]]:
        """(question, character range of the Doc that must not be the answer) pairs for ``doc``."""
        from ..global_attention import question_sentences

        given = doc._.questions if doc._.questions is not None else self.cfg["questions"]
        if isinstance(given, str):
            raise TypeError("doc._.questions must be a list of strings, not one string: wrap it in a list.")
        if given:
            return [(str(q), None) for q in given]
        return [(s.text.strip(), (s.start_char, s.end_char)) for s in question_sentences(doc, self.cfg["question_fallback"])]

    def _question_windows(self, doc_index: int, doc: Doc, encoded, question: str,
                          exclude: Optional[Tuple[int, int]]) -> List[Window]:
        """``<s> question </s></s> document-part </s>`` windows, global attention on ``<s>`` and the question
        (transformers' recommendation for QA) besides what the strategy marks in the document."""
        tok = self.tokenizer
        q_ids = tok.encode(question, add_special_tokens=False)
        if not q_ids:
            return []
        prefix = [*q_ids, tok.eos_token_id, tok.eos_token_id]
        windows = self._cut(doc_index, encoded, prefix, [1] * len(q_ids) + [0, 0],
                            extra={"question": question, "exclude": exclude})
        for window in windows:
            window.global_mask[0] = 1
        return windows

    def _windows(self, doc_index: int, doc: Doc, pieces: Optional[Pieces] = None) -> List[Window]:
        encoded = self._encode_doc(doc, pieces=pieces)
        return [w for q, exclude in self.questions_for(doc) for w in self._question_windows(doc_index, doc, encoded, q, exclude)]

    # ---- training -----------------------------------------------------------------------------------------
    def _training_texts(self, example: Example) -> List[str]:
        return [example.reference.text, *(example.reference._.questions or [])]

    def _training_batch(self, examples: List[Example]) -> Optional[Dict[str, Any]]:
        """One input per (document, gold question): start/end positions of the gold answer's pieces in the
        window that holds it (a long document trains on that window), or the ``<s>`` position (0) when the
        question has no answer, as in SQuAD 2.0 training."""
        import torch

        windows, starts, ends = [], [], []
        for i, eg in enumerate(examples):
            questions = eg.reference._.questions or []
            if not questions or not eg.predicted.text.strip():
                continue
            answers = eg.reference._.answers or {}
            encoded = self._encode_doc(eg.predicted)
            for question in questions:
                candidates = self._question_windows(i, eg.predicted, encoded, question, None)
                if not candidates:
                    continue
                span = answers.get(question)
                chosen, start, end = candidates[0], 0, 0
                if span is not None:
                    pieces = [k for k, (a, b) in enumerate(encoded.offsets) if a < span.end_char and span.start_char < b]
                    for window in candidates:
                        first, last = window.piece_start, window.piece_start + len(window.offsets) - 1
                        if pieces and first <= pieces[0] and pieces[-1] <= last:
                            chosen = window
                            start = window.content_start + pieces[0] - first
                            end = window.content_start + pieces[-1] - first
                            break
                windows.append(chosen)
                starts.append(start)
                ends.append(end)
        if not windows:
            return None
        batch = self._tensors(windows)
        device = batch["input_ids"].device
        batch["start_positions"] = torch.tensor(starts, device=device)
        batch["end_positions"] = torch.tensor(ends, device=device)
        return batch

    # ---- model ------------------------------------------------------------------------------------------
    def _run_batch(self, windows: List[Window]) -> List[Candidate]:
        output = self.inference_module(**self._tensors(windows))
        starts, ends = output.start_logits.float().cpu(), output.end_logits.float().cpu()
        return [self._best_span(w, starts[i, : len(w)], ends[i, : len(w)]) for i, w in enumerate(windows)]

    def _best_span(self, window: Window, start_logits, end_logits) -> Candidate:
        """The highest-scoring span of document pieces (start <= end < start + max_answer_length)."""
        import torch

        first, n = window.content_start, len(window.offsets)
        start_p = torch.log_softmax(start_logits, dim=0)
        end_p = torch.log_softmax(end_logits, dim=0)
        s_logit = start_logits[first : first + n].clone()
        e_logit = end_logits[first : first + n].clone()
        exclude = window.extra.get("exclude")
        if exclude is not None:
            banned = torch.tensor([a < exclude[1] and exclude[0] < b for a, b in window.offsets], dtype=torch.bool)
            s_logit[banned] = -math.inf
            e_logit[banned] = -math.inf
        width = min(self.cfg["max_answer_length"], n)
        padded = torch.nn.functional.pad(e_logit, (0, width - 1), value=-math.inf)
        pair = s_logit[:, None] + padded.unfold(0, width, 1)  # (n, width): start i, end i + k
        best = int(torch.argmax(pair))
        s, e = best // width, best // width + best % width
        best_sum = float(pair.view(-1)[best])
        question = window.extra["question"]
        if not math.isfinite(best_sum):
            return Candidate(question, 0, 0, 0.0, -math.inf)
        score = math.exp(float(start_p[first + s] + end_p[first + e]))
        margin = best_sum - float(start_logits[0] + end_logits[0])
        return Candidate(question, window.offsets[s][0], window.offsets[e][1], score, margin)

    def _merge(self, doc: Doc, parts: List[Tuple[Window, Candidate]]) -> Dict[str, Optional[Candidate]]:
        best: Dict[str, Optional[Candidate]] = {}
        for _, candidate in parts:
            current = best.get(candidate.question)
            if current is None or candidate.margin > current.margin:
                best[candidate.question] = candidate
        threshold = self.cfg["no_answer_threshold"]
        return {
            q: (c if c is not None and math.isfinite(c.margin) and (threshold is None or c.margin > threshold) else None)
            for q, c in best.items()
        }

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        """Scores of the answers to the gold questions. Examples read from a DocBin (``spacy evaluate``) have
        predicted Docs rebuilt from text, without ``_.questions``: those are answered again with the reference's
        questions first, so the scores are about the right questions."""
        examples = list(examples)
        redo = [eg for eg in examples if eg.predicted._.questions is None and eg.reference._.questions]
        if redo:
            for eg in redo:
                eg.predicted._.questions = list(eg.reference._.questions)
            docs = [eg.predicted for eg in redo]
            self.set_annotations(docs, self.predict(docs))
        return super().score(examples, **kwargs)

    def _empty_prediction(self, doc: Doc) -> Dict[str, Optional[Candidate]]:
        return {}

    def set_annotations(self, docs: Iterable[Doc], predictions: Iterable[Dict[str, Optional[Candidate]]]) -> None:
        key = self.cfg["spans_key"]
        for doc, answers in zip(docs, predictions):
            group = SpanGroup(doc, name=key)
            mapping: Dict[str, Optional[Span]] = {}
            for question, candidate in answers.items():
                span = None
                if candidate is not None:
                    span = doc.char_span(candidate.start_char, candidate.end_char, label=ANSWER_LABEL,
                                         alignment_mode="expand")
                if span is not None:
                    span._.question = question
                    span._.answer_score = candidate.score
                    group.append(span)
                mapping[question] = span
            doc.spans[key] = group
            doc._.answers = mapping
            self._set_global_attention_spans(doc)

    def to_record(self, doc: Doc) -> Dict[str, Any]:
        """``answers``: one entry per question, with the answer's text, character offsets and score (all
        ``None`` when the document holds no answer), for ``spacy-led apply``."""
        answers = []
        for question, span in (doc._.answers or {}).items():
            if span is None:
                answers.append({"question": question, "text": None, "start_char": None, "end_char": None,
                                "score": None})
                continue
            score = span._.answer_score
            answers.append({"question": question, "text": span.text, "start_char": span.start_char,
                            "end_char": span.end_char, "score": None if score is None else float(score)})
        return {"answers": answers}
