"""The settings of each LED component, each written once: name, type, default and check.

A settings class is the single definition the rest is made from: ``factory_signature`` turns its fields into
the config arguments of the component's spaCy factory (spaCy validates and fills the config from them), the
component keeps ``asdict(settings)`` as its ``cfg``, and ``cfg`` is what a saved pipeline stores. The model,
the global-attention strategy, the scorer and the ``checkpoint`` to load are not settings: they are given to
the component by the factory.
"""
from __future__ import annotations

import importlib.util
import inspect
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional

from .windows import OVERFLOW_MODES


@dataclass
class PipeSettings:
    """What every LED component has: long-document handling and batching."""

    overflow: str = "chunk"  # "chunk", "truncate" or "error": a document longer than max_length
    max_length: Optional[int] = None  # model positions per input; None: the encoder's own limit
    batch_token_budget: int = 16384  # padded tokens per model batch
    global_attention_spans_key: Optional[str] = None  # store the strategy's global tokens as doc.spans[key]
    quantize: Optional[str] = None  # "int8": dynamic int8 Linear layers for CPU inference; None: the float weights
    runtime: str = "torch"  # "onnx": predict with onnxruntime on the export at onnx_path (spacy-led export-onnx)
    onnx_path: Optional[str] = None  # the export of this component's model, for runtime = "onnx"

    def __post_init__(self) -> None:
        from ..modeling.quantize import check_quantize  # not at import: the factories import cheaply

        check_quantize(self.quantize)
        check_runtime(self.runtime, self.onnx_path, self.quantize)
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow={self.overflow!r} is not one of {OVERFLOW_MODES}.")
        if self.batch_token_budget < 1:
            raise ValueError(f"batch_token_budget must be positive; got {self.batch_token_budget}.")


RUNTIMES = ("torch", "onnx")


def check_runtime(runtime: str, onnx_path: Optional[str], quantize: Optional[str]) -> None:
    """A known runtime; for "onnx", an export path and an importable onnxruntime (the export itself is checked
    against the component's weights when it is first used)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r} is not one of {RUNTIMES}.")
    if runtime != "onnx":
        return
    if not onnx_path:
        raise ValueError('runtime = "onnx" needs onnx_path: the directory `spacy-led export-onnx` wrote for this '
                         "component's model.")
    if quantize is not None:
        raise ValueError(f'quantize={quantize!r} applies to the torch runtime; with runtime = "onnx" leave it unset.')
    if importlib.util.find_spec("onnxruntime") is None:
        raise ValueError('runtime = "onnx" needs onnxruntime: pip install "spacy-led[onnx]".')


# The summarizer's named generation settings and the generate() argument each one is.
GENERATION_ARGUMENTS = {
    "num_beams": "num_beams",
    "max_summary_length": "max_length",
    "max_new_tokens": "max_new_tokens",
    "min_summary_length": "min_length",
    "length_penalty": "length_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
}
# generate() settings the summarizer decides itself: one summary per Doc, its score, no per-step tensors.
MANAGED_GENERATION_SETTINGS = ("num_return_sequences", "return_dict_in_generate", "output_scores", "output_logits")


@dataclass
class SummarizerSettings(PipeSettings):
    summary_attr: str = "summary"  # the Doc extension the summary is written to (its score: <summary_attr>_score)
    num_beams: Optional[int] = None  # None here and below: the checkpoint's generation default
    max_summary_length: Optional[int] = None
    max_new_tokens: Optional[int] = None
    min_summary_length: Optional[int] = None
    length_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    generation_config: Dict[str, Any] = field(default_factory=dict)  # any other generate() setting, by its name
    seed: Optional[int] = None  # sampling from this seed: the same documents in the same batches, the same summaries
    reduce_chunks: bool = False  # summarise the joined window summaries once more

    def __post_init__(self) -> None:
        """A generation setting that is unknown, unsupported, invalid, given twice or decided by the component
        fails here, at ``add_pipe``."""
        from ..modeling.generation_config import GenerationConfig  # not at import: the factories import cheaply

        super().__post_init__()
        GenerationConfig.from_dict(self.generation_config)
        managed = [name for name in MANAGED_GENERATION_SETTINGS if name in self.generation_config]
        if managed:
            raise ValueError(f"generation_config sets {managed}: led_summarizer writes one summary per Doc and its "
                             f"score itself; remove them.")
        twice = [f"{name} (= {argument})" for name, argument in GENERATION_ARGUMENTS.items()
                 if getattr(self, name) is not None and argument in self.generation_config]
        if twice:
            raise ValueError(f"{', '.join(twice)} is given both as a led_summarizer setting and in generation_config: "
                             f"give it once.")


@dataclass
class ClassifierSettings(PipeSettings):
    labels: List[str] = field(default_factory=list)  # empty: the checkpoint's, or the training data's
    multi_label: bool = False
    threshold: float = 0.5  # multi-label: the best label is set only from this score
    label_attr: str = "label"  # the Doc extension the best label is written to


@dataclass
class QASettings(PipeSettings):
    questions: List[str] = field(default_factory=list)  # asked of every Doc without doc._.questions
    question_fallback: str = "punctuation"  # finding question sentences without a sentencizer
    max_answer_length: int = 30  # pieces
    no_answer_threshold: Optional[float] = 0.0  # None: always answer
    chunk_overlap: int = 128  # pieces shared by consecutive windows of a long document
    spans_key: str = "answers"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_answer_length < 1:
            raise ValueError(f"max_answer_length must be at least 1 piece; got {self.max_answer_length}.")
        if self.chunk_overlap < 0:
            raise ValueError(f"chunk_overlap must not be negative; got {self.chunk_overlap}.")


def factory_signature(settings: type) -> inspect.Signature:
    """``(nlp, name, model, global_attention, checkpoint, revision, scorer, <one keyword per setting>)`` with the
    settings' types and defaults: what spaCy reads to validate and fill a component's config block."""
    from spacy.language import Language
    from thinc.api import Model

    fixed = [
        ("nlp", Language, inspect.Parameter.empty),
        ("name", str, inspect.Parameter.empty),
        ("model", Model, inspect.Parameter.empty),
        ("global_attention", Callable, inspect.Parameter.empty),
        ("checkpoint", Optional[str], None),  # a HuggingFace LED directory or hub id, read by the component's load()
        ("revision", Optional[str], None),  # the hub revision (branch, tag, commit) of a hub id checkpoint
        ("scorer", Optional[Callable], None),
    ]
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t) for n, t, d in fixed]
    types = typing.get_type_hints(settings)
    for item in fields(settings):
        default: Any = item.default if item.default is not MISSING else item.default_factory()  # type: ignore[misc]
        params.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=types[item.name]))
    return inspect.Signature(params)
