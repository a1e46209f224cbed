"""Scores for the LED components: ROUGE for summaries, SQuAD exact match / F1 for answers.

- ROUGE is Google's ``rouge-score`` package itself (``RougeScorer``), the implementation summarization papers
  and transformers' summarization examples report: ROUGE-1, ROUGE-2, ROUGE-L (LCS over the whole text) and
  ROUGE-Lsum (summary-level LCS over newline-separated sentences), with Porter stemming on by default
  (``use_stemmer=True``, as LED's and BART's published numbers). For ROUGE-Lsum each text is split into
  sentences first and joined with newlines, as transformers' ``run_summarization.py`` does with
  ``nltk.sent_tokenize``; here spaCy's rule-based ``sentencizer`` splits, so no NLTK data is downloaded.
- :func:`squad_exact_match` and :func:`squad_f1` follow the official SQuAD v2.0 evaluation script (which agrees
  with v1.1 on answerable questions), on a 0..1 scale instead of the script's percentages.

The registered scorers are what the components name in their ``scorer`` setting; spaCy calls them with the
component's ``cfg`` as keyword arguments (``Pipe.score``), so they accept and mostly ignore extra keywords.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Dict, Iterable, List, Optional

from spacy.util import registry

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# ---- ROUGE ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _sentencizer():
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def split_sentences(text: str) -> str:
    """``text`` with one sentence per line: the input ROUGE-Lsum expects (rouge-score splits on newlines)."""
    return "\n".join(sent.text.strip() for sent in _sentencizer()(text).sents if sent.text.strip())


@lru_cache(maxsize=None)
def _rouge_scorer(use_stemmer: bool):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)


def rouge_scores(
    prediction: Optional[str], reference: Optional[str], *, use_stemmer: bool = True
) -> Dict[str, Dict[str, float]]:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum of ``prediction`` against ``reference``.

    Returns ``{"rouge1": {"p", "r", "f"}, ..., "rougeLsum": {...}}`` (spaCy's PRF naming):
    ``RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer).score(reference, prediction)`` on
    the texts split one sentence per line (note that rouge-score takes the reference first). ``None`` counts
    as the empty text.
    """
    scores = _rouge_scorer(use_stemmer).score(split_sentences(reference or ""), split_sentences(prediction or ""))
    return {key: {"p": s.precision, "r": s.recall, "f": s.fmeasure} for key, s in scores.items()}


def score_summaries(
    examples: Iterable[Any], *, attr: str = "summary", gold_attr: str = "summary", use_stemmer: bool = True
) -> Dict[str, Optional[float]]:
    """Mean ROUGE F over the examples whose reference has a summary: ``summary_rouge1_f``,
    ``summary_rouge2_f``, ``summary_rougeL_f``, ``summary_rougeLsum_f`` (``None`` for all if none has)."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    count = 0
    for eg in examples:
        gold = getattr(eg.reference._, gold_attr)
        if gold is None:
            continue
        scores = rouge_scores(getattr(eg.predicted._, attr) or "", gold, use_stemmer=use_stemmer)
        for key in ROUGE_TYPES:
            totals[key] += scores[key]["f"]
        count += 1
    return {f"summary_{key}_f": (totals[key] / count if count else None) for key in ROUGE_TYPES}


@registry.scorers("spacy_led.summary_scorer.v1")
def make_summary_scorer(
    attr: Optional[str] = None, gold_attr: str = "summary", use_stemmer: bool = True
) -> Callable[..., Dict[str, Any]]:
    """Scorer of ``led_summarizer``: mean ROUGE F as rouge-score computes it, ``summary_rouge1_f``,
    ``summary_rouge2_f``, ``summary_rougeL_f`` and ``summary_rougeLsum_f``.

    attr: the Doc extension holding the predicted summary; by default the component's ``summary_attr``
        (spaCy passes the component's cfg to the scorer), else ``"summary"``.
    gold_attr: the extension holding the reference summary (the corpus readers write ``summary``).
    use_stemmer: Porter-stem tokens before matching (rouge-score's ``use_stemmer``), as published LED
        results do.
    """
    from .extensions import ensure_doc_attr

    for name in {attr or "summary", gold_attr}:
        ensure_doc_attr(name)

    def score(examples: Iterable[Any], **kwargs: Any) -> Dict[str, Any]:
        predicted_attr = attr or kwargs.get("summary_attr") or "summary"
        ensure_doc_attr(predicted_attr)
        return score_summaries(examples, attr=predicted_attr, gold_attr=gold_attr, use_stemmer=use_stemmer)

    return score


# ---- SQuAD ----------------------------------------------------------------------------------------------
def normalize_answer(text: Optional[str]) -> str:
    """The official SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in (text or "").lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answerable_golds(golds: Iterable[Optional[str]]) -> List[str]:
    """As the official v2.0 script: gold answers that normalize to nothing are dropped, and a question with
    none left is unanswerable, whose only correct answer is the empty string."""
    kept = [g for g in golds if normalize_answer(g)]
    return kept or [""]


def _f1(gold: str, prediction: str) -> float:
    gold_tokens = normalize_answer(gold).split()
    pred_tokens = normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact_match(prediction: Optional[str], golds: Iterable[Optional[str]]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0. No gold answers (an
    unanswerable question): 1.0 when the prediction is empty or None."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _answerable_golds(golds)))


def squad_f1(prediction: Optional[str], golds: Iterable[Optional[str]]) -> float:
    """Best token-bag F1 of the normalized prediction over the gold answers (official SQuAD semantics)."""
    return max(_f1(g, prediction or "") for g in _answerable_golds(golds))


def score_answers(examples: Iterable[Any]) -> Dict[str, Optional[float]]:
    """Mean exact match and F1 over every gold question of every example (``None`` when there is none).

    Gold: ``reference._.gold_answers`` (question -> list of answer texts, [] when unanswerable). Prediction:
    ``predicted._.answers`` (question -> Span or None); a question missing there counts as unanswered.
    """
    exact = f1 = 0.0
    count = 0
    for eg in examples:
        gold_answers = eg.reference._.gold_answers or {}
        predicted = eg.predicted._.answers or {}
        for question, golds in gold_answers.items():
            answer = predicted.get(question)
            text = answer.text if answer is not None else ""
            exact += squad_exact_match(text, golds)
            f1 += squad_f1(text, golds)
            count += 1
    if not count:
        return {"qa_exact_match": None, "qa_f1": None}
    return {"qa_exact_match": exact / count, "qa_f1": f1 / count}


@registry.scorers("spacy_led.qa_scorer.v1")
def make_qa_scorer() -> Callable[..., Dict[str, Any]]:
    """Scorer of ``led_qa``: ``qa_exact_match`` and ``qa_f1`` (SQuAD semantics, 0..1)."""
    from .extensions import ensure_extensions

    ensure_extensions()

    def score(examples: Iterable[Any], **kwargs: Any) -> Dict[str, Any]:
        return score_answers(examples)

    return score


# ---- categories -----------------------------------------------------------------------------------------
@registry.scorers("spacy_led.cats_scorer.v1")
def make_cats_scorer() -> Callable[..., Dict[str, Any]]:
    """Scorer of ``led_classifier``: spaCy's ``Scorer.score_cats`` on ``doc.cats`` (``cats_score``,
    ``cats_micro_f``, ``cats_macro_auc``, ...), single- or multi-label as the component's ``multi_label``.

    spaCy's own ``spacy.textcat_scorer.v2`` cannot be used: it fixes ``multi_label=False`` and also receives
    the component's cfg, which has ``multi_label`` too (TypeError: multiple values for 'multi_label').
    """

    def score(examples: Iterable[Any], **kwargs: Any) -> Dict[str, Any]:
        from spacy.scorer import Scorer

        return Scorer.score_cats(
            examples,
            "cats",
            labels=kwargs.get("labels", ()),
            multi_label=bool(kwargs.get("multi_label", False)),
            threshold=kwargs.get("threshold"),
        )

    return score
