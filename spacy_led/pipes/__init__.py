"""spaCy factories of the LED components.

spaCy imports every installed ``spacy_factories`` entry point on every ``spacy.blank()`` / ``spacy.load()``,
so this module does nothing but register: the component classes are imported when a component is made.
"""
from __future__ import annotations

from typing import Callable, List, Optional

from spacy.language import Language
from thinc.api import Model

from .. import global_attention as _strategies  # noqa: F401  (registers the default strategies)
from .. import layers as _layers  # noqa: F401  (registers the architecture)
from .. import scoring as _scoring  # noqa: F401  (registers the scorers named in the default configs)

_COMMON = {
    "checkpoint": None,
    "overflow": "chunk",
    "max_length": None,
    "batch_token_budget": 16384,
    "global_attention_spans_key": None,
}


@Language.factory(
    "led_summarizer",
    assigns=["doc._.summary"],
    default_config={
        **_COMMON,
        "model": {"@architectures": "spacy_led.LED.v1", "task": "generation"},
        "global_attention": {"@misc": "spacy_led.first_token.v1"},
        "summary_attr": "summary",
        "num_beams": None,
        "max_summary_length": None,
        "max_new_tokens": None,
        "min_summary_length": None,
        "length_penalty": None,
        "no_repeat_ngram_size": None,
        "reduce_chunks": False,
        "scorer": {"@scorers": "spacy_led.summary_scorer.v1"},
    },
    default_score_weights={"summary_rouge1_f": 0.25, "summary_rouge2_f": 0.25, "summary_rougeL_f": 0.0,
                           "summary_rougeLsum_f": 0.5},
)
def make_summarizer(
    nlp: Language,
    name: str,
    model: Model,
    checkpoint: Optional[str],
    global_attention: Callable,
    overflow: str,
    max_length: Optional[int],
    batch_token_budget: int,
    global_attention_spans_key: Optional[str],
    summary_attr: str,
    num_beams: Optional[int],
    max_summary_length: Optional[int],
    max_new_tokens: Optional[int],
    min_summary_length: Optional[int],
    length_penalty: Optional[float],
    no_repeat_ngram_size: Optional[int],
    reduce_chunks: bool,
    scorer: Optional[Callable],
):
    from .summarizer import LEDSummarizer

    return LEDSummarizer(
        nlp.vocab, model, name, checkpoint=checkpoint, global_attention=global_attention, overflow=overflow,
        max_length=max_length, batch_token_budget=batch_token_budget,
        global_attention_spans_key=global_attention_spans_key, summary_attr=summary_attr,
        num_beams=num_beams, max_summary_length=max_summary_length, max_new_tokens=max_new_tokens,
        min_summary_length=min_summary_length, length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, reduce_chunks=reduce_chunks, scorer=scorer,
    )


@Language.factory(
    "led_classifier",
    assigns=["doc.cats", "doc._.label"],
    default_config={
        **_COMMON,
        "model": {"@architectures": "spacy_led.LED.v1", "task": "classification"},
        "global_attention": {"@misc": "spacy_led.first_token.v1"},
        "labels": [],
        "multi_label": False,
        "threshold": 0.5,
        "label_attr": "label",
        "scorer": {"@scorers": "spacy_led.cats_scorer.v1"},
    },
    default_score_weights={"cats_score": 1.0, "cats_micro_f": None, "cats_macro_f": None, "cats_macro_auc": None},
)
def make_classifier(
    nlp: Language,
    name: str,
    model: Model,
    checkpoint: Optional[str],
    global_attention: Callable,
    labels: List[str],
    multi_label: bool,
    threshold: float,
    overflow: str,
    max_length: Optional[int],
    batch_token_budget: int,
    global_attention_spans_key: Optional[str],
    label_attr: str,
    scorer: Optional[Callable],
):
    from .classifier import LEDClassifier

    return LEDClassifier(
        nlp.vocab, model, name, checkpoint=checkpoint, global_attention=global_attention, labels=labels,
        multi_label=multi_label, threshold=threshold, overflow=overflow, max_length=max_length,
        batch_token_budget=batch_token_budget, global_attention_spans_key=global_attention_spans_key,
        label_attr=label_attr, scorer=scorer,
    )


@Language.factory(
    "led_qa",
    assigns=["doc.spans", "doc._.answers"],
    default_config={
        **_COMMON,
        "model": {"@architectures": "spacy_led.LED.v1", "task": "question_answering"},
        "global_attention": {"@misc": "spacy_led.question_tokens.v1"},
        "questions": [],
        "question_fallback": "punctuation",
        "max_answer_length": 30,
        "no_answer_threshold": 0.0,
        "chunk_overlap": 128,
        "spans_key": "answers",
        "scorer": {"@scorers": "spacy_led.qa_scorer.v1"},
    },
    default_score_weights={"qa_f1": 1.0, "qa_exact_match": 0.0},
)
def make_question_answerer(
    nlp: Language,
    name: str,
    model: Model,
    checkpoint: Optional[str],
    global_attention: Callable,
    questions: List[str],
    question_fallback: str,
    max_answer_length: int,
    no_answer_threshold: Optional[float],
    overflow: str,
    max_length: Optional[int],
    chunk_overlap: int,
    batch_token_budget: int,
    global_attention_spans_key: Optional[str],
    spans_key: str,
    scorer: Optional[Callable],
):
    from .question_answering import LEDQuestionAnswerer

    return LEDQuestionAnswerer(
        nlp.vocab, model, name, checkpoint=checkpoint, global_attention=global_attention, questions=questions,
        question_fallback=question_fallback, max_answer_length=max_answer_length,
        no_answer_threshold=no_answer_threshold, overflow=overflow, max_length=max_length,
        chunk_overlap=chunk_overlap, batch_token_budget=batch_token_budget,
        global_attention_spans_key=global_attention_spans_key, spans_key=spans_key, scorer=scorer,
    )
