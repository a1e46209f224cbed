"""spaCy factories of the LED components.

spaCy imports every installed ``spacy_factories`` entry point on every ``spacy.blank()`` / ``spacy.load()``,
so this module does nothing but register: the component classes are imported when a component is made. Each
factory's config arguments are its component's settings (``settings.py``, where each is written once) plus
the model, checkpoint, global-attention strategy and scorer.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Dict

from spacy.language import Language

from .. import global_attention as _strategies  # noqa: F401  (registers the default strategies)
from .. import layers as _layers  # noqa: F401  (registers the architecture)
from .. import scoring as _scoring  # noqa: F401  (registers the scorers named in the default configs)
from .settings import ClassifierSettings, QASettings, SummarizerSettings, factory_signature


def _factory(function_name: str, component_class: str, settings: type) -> Callable[..., Any]:
    """A factory making ``component_class`` (``"module:Class"`` in this package, imported on first use) with
    config arguments made from ``settings``' fields."""

    def make(nlp: Language, name: str, model, global_attention, checkpoint, revision, scorer, **values: Any):
        module, cls = component_class.split(":")
        pipe_class = getattr(import_module(f"{__name__}.{module}"), cls)
        return pipe_class(nlp.vocab, model, name, checkpoint=checkpoint, revision=revision,
                          global_attention=global_attention,
                          scorer=scorer, **values)

    make.__signature__ = factory_signature(settings)  # type: ignore[attr-defined]
    make.__annotations__ = {p.name: p.annotation for p in make.__signature__.parameters.values()}
    make.__name__ = make.__qualname__ = function_name
    return make


def _blocks(task: str, strategy: str, scorer: str) -> Dict[str, Any]:
    """The registered-function blocks of a default config (the plain settings come from the signature)."""
    return {
        "model": {"@architectures": "spacy_led.LED.v1", "task": task},
        "global_attention": {"@misc": strategy},
        "scorer": {"@scorers": scorer},
    }


make_summarizer = Language.factory(
    "led_summarizer",
    assigns=["doc._.summary", "doc._.summary_score"],
    default_config=_blocks("generation", "spacy_led.first_token.v1", "spacy_led.summary_scorer.v1"),
    default_score_weights={"summary_rouge1_f": 0.25, "summary_rouge2_f": 0.25, "summary_rougeL_f": 0.0,
                           "summary_rougeLsum_f": 0.5},
    func=_factory("make_summarizer", "summarizer:LEDSummarizer", SummarizerSettings),
)

make_classifier = Language.factory(
    "led_classifier",
    assigns=["doc.cats", "doc._.label"],
    default_config=_blocks("classification", "spacy_led.first_token.v1", "spacy_led.cats_scorer.v1"),
    default_score_weights={"cats_score": 1.0, "cats_micro_f": None, "cats_macro_f": None, "cats_macro_auc": None},
    func=_factory("make_classifier", "classifier:LEDClassifier", ClassifierSettings),
)

make_question_answerer = Language.factory(
    "led_qa",
    assigns=["doc.spans", "doc._.answers"],
    default_config=_blocks("question_answering", "spacy_led.question_tokens.v1", "spacy_led.qa_scorer.v1"),
    default_score_weights={"qa_f1": 1.0, "qa_exact_match": 0.0},
    func=_factory("make_question_answerer", "question_answering:LEDQuestionAnswerer", QASettings),
)
