"""What the three LED components share: tokenizing Docs into model windows, long-document handling, batching
by length under a token budget, per-document error isolation, and serialization.

Data flows one way: Doc -> global-attention strategy (character ranges of the Doc) -> tokenizer (BPE ids with
character offsets) -> windows that fit the model -> length-sorted batches -> the Thinc-wrapped torch LED ->
per-window outputs -> merged per Doc -> ``set_annotations``. The task pipes implement ``_run_batch`` (windows
in, one output per window) and ``_merge`` (the windows of one Doc into its prediction).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import srsly
from spacy import util
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from thinc.api import Model

from .. import layers
from ..global_attention import GlobalAttention, global_mask_for_pieces, to_global_attention
from .windows import OVERFLOW_MODES, DocumentTooLong, Encoded, Window, WindowLimits, batches, cut, padded

logger = logging.getLogger("spacy_led")

GLOBAL_ATTENTION_LABEL = "GLOBAL"

__all__ = ["LEDPipe", "DocumentTooLong", "OVERFLOW_MODES", "Window"]


def _one_torch_thread_after_fork() -> None:
    """``nlp.pipe(n_process=N)`` forks workers. GNU OpenMP, which torch's CPU kernels use, hangs in a forked
    child once the parent has used its thread pool; with one intra-op thread torch never enters it. N workers
    of one thread each is also what N processes on N cores want."""
    import torch

    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_torch_thread_after_fork)


class LEDPipe(TrainablePipe):
    """Base class of ``led_summarizer``, ``led_classifier`` and ``led_qa``."""

    task = "generation"

    def __init__(
        self,
        vocab,
        model: Model,
        name: str,
        *,
        checkpoint: Optional[str],
        global_attention: Callable[[Doc], Any],
        overflow: str,
        max_length: Optional[int],
        batch_token_budget: int,
        chunk_overlap: int = 0,
        global_attention_spans_key: Optional[str] = None,
        scorer: Optional[Callable] = None,
        **cfg: Any,
    ) -> None:
        if overflow not in OVERFLOW_MODES:
            raise ValueError(f"overflow={overflow!r} is not one of {OVERFLOW_MODES}.")
        if batch_token_budget < 1:
            raise ValueError(f"batch_token_budget must be positive; got {batch_token_budget}.")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.global_attention = global_attention
        self.scorer = scorer
        self._tokenizer = None
        # Loaded on first use, not here: `spacy.load` builds the pipe from its config (which still names the
        # checkpoint it was made from) and then reads the saved weights; the checkpoint need not exist there.
        self._pending_checkpoint: Optional[str] = checkpoint or None
        self.cfg: Dict[str, Any] = {
            "overflow": overflow,
            "max_length": max_length,
            "batch_token_budget": batch_token_budget,
            "chunk_overlap": chunk_overlap,
            "global_attention_spans_key": global_attention_spans_key,
            **cfg,
        }

    # ---- model and tokenizer ----------------------------------------------------------------------------
    def load_checkpoint(self, path: str) -> None:
        """Tokenizer and weights from a HuggingFace LED checkpoint directory: the pipe works right away."""
        from ..tokenizer import LEDTokenizer

        path = str(Path(path).expanduser())
        self.tokenizer = LEDTokenizer.from_pretrained(path)
        layers.load_checkpoint(self.model, path, **self._checkpoint_config())

    def _checkpoint_config(self) -> Dict[str, Any]:
        """Config changes a task applies when loading a checkpoint (e.g. the classifier's labels)."""
        return {}

    def _ensure_loaded(self) -> None:
        """Load the checkpoint named in the config, once, if nothing else has given the pipe a model."""
        if self._pending_checkpoint and not layers.has_module(self.model):
            path, self._pending_checkpoint = self._pending_checkpoint, None
            self.load_checkpoint(path)

    @property
    def tokenizer(self):
        self._ensure_loaded()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    @property
    def module(self):
        self._ensure_loaded()
        return layers.get_module(self.model)

    def _require_ready(self) -> None:
        self._ensure_loaded()
        if self._tokenizer is None or not layers.has_module(self.model):
            raise ValueError(
                f"component '{self.name}' has no model yet: add it with config={{'checkpoint': "
                f"'path/to/led-checkpoint'}} (a HuggingFace LED directory), or call nlp.initialize() to "
                f"train one from scratch."
            )

    @property
    def max_input_length(self) -> int:
        limit = self.module.config.max_encoder_position_embeddings
        if self.cfg["max_length"]:
            limit = min(limit, int(self.cfg["max_length"]))
        return limit

    # ---- Doc -> windows ---------------------------------------------------------------------------------
    def _encode_doc(self, doc: Doc, strategy: Optional[Callable[[Doc], Any]] = None) -> Encoded:
        encoding = self.tokenizer.encode(doc.text, add_special_tokens=False)
        attention: GlobalAttention = to_global_attention((strategy or self.global_attention)(doc), doc)
        mask = global_mask_for_pieces(
            GlobalAttention(bos=False, char_spans=attention.char_spans), encoding.offsets, [0] * len(encoding.ids)
        )
        return Encoded(list(encoding.ids), list(encoding.offsets), mask, attention.bos)

    def _window_limits(self) -> WindowLimits:
        tok = self.tokenizer
        return WindowLimits(self.max_input_length, self.cfg["overflow"], int(self.cfg["chunk_overlap"]),
                            tok.bos_token_id, tok.eos_token_id)

    def _cut(
        self,
        doc_index: int,
        encoded: Encoded,
        prefix: Sequence[int] = (),
        prefix_global: Sequence[int] = (),
        extra: Optional[Dict[str, Any]] = None,
    ) -> List[Window]:
        """The Doc's windows under this pipe's limits (see ``windows.cut``)."""
        return cut(doc_index, encoded, self._window_limits(), prefix=prefix, prefix_global=prefix_global,
                   extra=extra, source=f"component '{self.name}'")

    def _windows(self, doc_index: int, doc: Doc) -> List[Window]:
        """The windows of one Doc (tasks may override, e.g. one set per question)."""
        return self._cut(doc_index, self._encode_doc(doc))

    def _tensors(self, windows: Sequence[Window]) -> Dict[str, Any]:
        device = self.module.device
        return {k: v.to(device) for k, v in padded(windows, self.tokenizer.pad_token_id).items()}

    # ---- prediction -------------------------------------------------------------------------------------
    def predict(self, docs: Iterable[Doc]) -> List[Any]:
        """One prediction per Doc; the Docs are not changed. Raises on the first failing Doc (``pipe`` isolates
        failures instead)."""
        docs = list(docs)
        self._require_ready()
        windows: List[Window] = []
        for i, doc in enumerate(docs):
            if doc.text.strip():
                windows.extend(self._windows(i, doc))
        outputs = self._run_windows(windows)
        per_doc: List[List[Tuple[Window, Any]]] = [[] for _ in docs]
        for window, output in zip(windows, outputs):
            per_doc[window.doc_index].append((window, output))
        return [self._merge(doc, parts) if parts else self._empty_prediction(doc) for doc, parts in zip(docs, per_doc)]

    def _run_windows(self, windows: List[Window]) -> List[Any]:
        """Outputs for ``windows`` in their order, computed in length-sorted batches."""
        import torch

        outputs: Dict[int, Any] = {}
        module = self.module
        module.eval()
        with torch.no_grad():
            for batch in batches(windows, int(self.cfg["batch_token_budget"])):
                for window, output in zip(batch, self._run_batch(batch)):
                    outputs[id(window)] = output
        return [outputs[id(w)] for w in windows]

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """Process Docs in minibatches. A Doc that fails goes to spaCy's error handler (which re-raises by
        default, see ``nlp.set_error_handler``); the other Docs of its batch are still processed, and every
        Doc is yielded, in order (a failed one without annotations)."""
        error_handler = self.get_error_handler()
        for docs in util.minibatch(stream, size=batch_size):
            try:
                predictions = self.predict(docs)
            except Exception:
                predictions = self._predict_one_by_one(docs, error_handler)
            for doc, prediction in zip(docs, predictions):
                if prediction is not _FAILED:
                    self.set_annotations([doc], [prediction])
            yield from docs

    def _predict_one_by_one(self, docs: List[Doc], error_handler) -> List[Any]:
        predictions = []
        for doc in docs:
            try:
                predictions.append(self.predict([doc])[0])
            except Exception as err:
                error_handler(self.name, self, [doc], err)
                predictions.append(_FAILED)
        return predictions

    # ---- what the attention saw -------------------------------------------------------------------------
    def _set_global_attention_spans(self, doc: Doc) -> None:
        """With ``global_attention_spans_key`` set, store the Doc tokens the strategy gave global attention as
        the span group ``doc.spans[key]`` (runs of adjacent tokens as one Span labelled ``GLOBAL``), so
        ``displacy.render(doc, style="span", options={"spans_key": key})`` shows where the attention went.
        ``<s>`` has no Doc token: ``attrs["bos"]`` records whether it was global too (a ``first_token`` strategy
        leaves the group empty). Off by default: it is an inspection aid, and Docs and DocBins stay as small as
        they were unless asked."""
        key = self.cfg.get("global_attention_spans_key")
        if not key:
            return
        attention = to_global_attention(self.global_attention(doc), doc)
        marked = [False] * len(doc)
        for start, end in attention.char_spans:
            span = doc.char_span(start, max(end, start + 1), alignment_mode="expand")  # (a, a): the token at a
            if span is not None:
                marked[span.start : span.end] = [True] * len(span)
        spans, run_start = [], None
        for i, is_global in enumerate([*marked, False]):
            if is_global and run_start is None:
                run_start = i
            elif not is_global and run_start is not None:
                spans.append(Span(doc, run_start, i, label=GLOBAL_ATTENTION_LABEL))
                run_start = None
        doc.spans[key] = SpanGroup(doc, name=key, attrs={"bos": attention.bos}, spans=spans)

    # ---- tasks implement these --------------------------------------------------------------------------
    def _run_batch(self, windows: List[Window]) -> List[Any]:
        raise NotImplementedError

    def _merge(self, doc: Doc, parts: List[Tuple[Window, Any]]) -> Any:
        raise NotImplementedError

    def _empty_prediction(self, doc: Doc) -> Any:
        raise NotImplementedError

    # ---- training -----------------------------------------------------------------------------------------
    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp=None,
        checkpoint: Optional[str] = None,
        tokenizer: Optional[str] = None,
        vocab_size: int = 8000,
    ) -> None:
        """Make the pipe ready to train.

        ``checkpoint`` (here or in the component config): fine-tune a HuggingFace LED. Otherwise a fresh LED of
        the architecture's shape is built, with the tokenizer at ``tokenizer`` (a directory with vocab.json +
        merges.txt or tokenizer.json), or else a byte-level BPE of ``vocab_size`` learnt from the training
        texts."""
        validate_get_examples(get_examples, f"{type(self).__name__}.initialize")
        self._initialize_from_examples(get_examples)
        if not checkpoint:
            self._ensure_loaded()
        if checkpoint:
            self.load_checkpoint(checkpoint)
        elif not layers.has_module(self.model):
            from ..tokenizer import LEDTokenizer

            if tokenizer:
                self.tokenizer = LEDTokenizer.from_pretrained(tokenizer)
            else:
                texts = [t for eg in get_examples() for t in self._training_texts(eg) if t]
                if not texts:
                    raise ValueError(f"component '{self.name}' found no training text to learn a tokenizer from.")
                self.tokenizer = LEDTokenizer.train(texts, vocab_size)
            self._build_fresh()
        else:
            self._adapt_loaded_model()

    def _initialize_from_examples(self, get_examples) -> None:
        """Task settings read off the training data (the classifier's labels)."""

    def _adapt_loaded_model(self) -> None:
        """Fit an already loaded model to settings found at initialize (the classifier's labels)."""

    def _training_texts(self, example: Example) -> List[str]:
        return [example.reference.text]

    def _build_fresh(self) -> None:
        tok = self.tokenizer
        layers.build_fresh(
            self.model,
            vocab_size=tok.vocab_size,
            special_ids={"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id},
            **self._checkpoint_config(),
        )

    def _training_window(self, index: int, doc: Doc) -> Window:
        """The input a Doc trains on: its first window; a longer document is cut, and the cut is logged
        (``overflow="error"`` raises instead)."""
        windows = self._windows(index, doc)
        if len(windows) > 1:
            logger.warning(
                "%s: training document %d is longer than the model reads (%d positions); training on its "
                "first %d pieces.", self.name, index, self.max_input_length, len(windows[0].offsets),
            )
        return windows[0]

    def _training_batch(self, examples: List[Example]) -> Optional[Dict[str, Any]]:
        """Input tensors and gold targets for ``examples`` (None if none has a gold annotation)."""
        raise NotImplementedError

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd=None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """One gradient step on ``examples``: the loss is computed inside torch and backpropagated there; the
        optimizer step happens in ``finish_update`` (only here if ``sgd`` is given, so gradients accumulate
        otherwise). Dropout rates come from the model's config, as in spacy-transformers."""
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.update")
        self._require_ready()
        batch = self._training_batch(examples)
        if batch is None:
            return losses
        output, backprop = self.model.begin_update(batch)
        backprop(1.0)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += float(output.loss.detach())
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Any = None) -> Tuple[float, None]:
        """The training loss of the current weights on ``examples`` (eval mode, no gradient)."""
        import torch

        self._require_ready()
        batch = self._training_batch(list(examples))
        if batch is None:
            return 0.0, None
        self.module.eval()
        with torch.no_grad():
            return float(self.module(**batch).loss), None

    # ---- serialization ----------------------------------------------------------------------------------
    def _serializers(self):
        return {
            "cfg": (lambda: srsly.json_dumps(self.cfg), lambda b: self.cfg.update(srsly.json_loads(b))),
            "tokenizer": (lambda: self.tokenizer.to_bytes(), self._load_tokenizer_bytes),
            "led_config": (lambda: srsly.json_dumps(self.module.config.to_dict()), self._load_led_config),
            "model": (lambda: self.model.to_bytes(), lambda b: self.model.from_bytes(b)),
        }

    def _load_tokenizer_bytes(self, data: bytes) -> None:
        from ..tokenizer import LEDTokenizer

        self.tokenizer = LEDTokenizer.from_bytes(data)

    def _load_led_config(self, data: bytes) -> None:
        layers.build_from_config(self.model, srsly.json_loads(data))

    def _check_serializable(self) -> None:
        self._ensure_loaded()
        if self._tokenizer is None or not layers.has_module(self.model):
            raise ValueError(f"component '{self.name}' has no model to save yet (no checkpoint, not initialized).")

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        self._check_serializable()
        serializers = {k: getter for k, (getter, _) in self._serializers().items()}
        serializers["vocab"] = lambda: self.vocab.to_bytes(exclude=exclude)
        return util.to_bytes(serializers, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        self._pending_checkpoint = None  # the stored model replaces the configured checkpoint
        deserializers = {k: setter for k, (_, setter) in self._serializers().items()}
        deserializers["vocab"] = lambda b: self.vocab.from_bytes(b, exclude=exclude)
        util.from_bytes(bytes_data, deserializers, exclude)
        return self

    def to_disk(self, path, *, exclude=tuple()) -> None:
        self._check_serializable()
        path = util.ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "cfg", self.cfg)
        srsly.write_json(path / "led_config.json", self.module.config.to_dict())
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.model.to_disk(path / "model")

    def from_disk(self, path, *, exclude=tuple()):
        from ..tokenizer import LEDTokenizer

        path = util.ensure_path(path)
        self._pending_checkpoint = None  # the stored model replaces the configured checkpoint
        self.cfg.update(srsly.read_json(path / "cfg"))
        self.tokenizer = LEDTokenizer.from_pretrained(path / "tokenizer")
        layers.build_from_config(self.model, srsly.read_json(path / "led_config.json"))
        self.model.from_disk(path / "model")
        return self


class _Failed:
    """Marks a Doc whose prediction failed and went to the error handler."""

    def __repr__(self) -> str:
        return "<failed>"


_FAILED = _Failed()
