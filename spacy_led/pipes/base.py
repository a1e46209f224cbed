"""What the three LED components share: reading the checkpoint (``load()``, one explicit step), tokenizing
Docs, running the model over windows, per-document error isolation, training plumbing and serialization. How
documents are cut into windows and batched is ``windows.py``; what each component is configured with is
``settings.py``.

Data flows one way: Doc -> global-attention strategy (character ranges of the Doc) -> tokenizer (BPE ids with
character offsets) -> windows that fit the model -> length-sorted batches -> the Thinc-wrapped torch LED ->
per-window outputs -> merged per Doc -> ``set_annotations``. The task pipes implement ``_run_batch`` (windows
in, one output per window) and ``_merge`` (the windows of one Doc into its prediction).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import srsly
from spacy import util
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from thinc.api import Model

from .. import layers
from ..bpe_chunks import Pieces, encode_pieces
from ..global_attention import GlobalAttention, doc_text, global_mask_for_pieces, to_global_attention
from .settings import PipeSettings
from .windows import OVERFLOW_MODES, DocumentTooLong, Encoded, Window, WindowLimits, batches, cut, padded

logger = logging.getLogger("spacy_led")

GLOBAL_ATTENTION_LABEL = "GLOBAL"

__all__ = ["LEDPipe", "DocumentTooLong", "OVERFLOW_MODES", "Window"]


_ONE_THREAD_PIDS: Set[int] = set()  # processes where _one_torch_thread_in_worker_process acted


def _one_torch_thread_in_worker_process(owner_pid: int) -> None:
    """Use one torch thread in a process other than the one that built the pipe: the workers of
    ``nlp.pipe(n_process=N)``. GNU OpenMP, which torch's CPU kernels use, hangs in a forked child once the
    parent has used its thread pool; with one intra-op thread, set before the child's first torch operation,
    torch never enters it. N workers of one thread each is also what N processes on N cores want. The
    process that built the pipe keeps its own setting."""
    pid = os.getpid()
    if pid != owner_pid and pid not in _ONE_THREAD_PIDS:
        import torch

        torch.set_num_threads(1)
        _ONE_THREAD_PIDS.add(pid)


class LEDPipe(TrainablePipe):
    """Base class of ``led_summarizer``, ``led_classifier`` and ``led_qa``."""

    task = "generation"
    settings_class = PipeSettings  # each task's settings (settings.py): its cfg

    def __init__(
        self,
        vocab,
        model: Model,
        name: str,
        *,
        checkpoint: Optional[str] = None,
        revision: Optional[str] = None,
        global_attention: Callable[[Doc], Any],
        scorer: Optional[Callable] = None,
        **settings: Any,
    ) -> None:
        self.vocab = vocab
        self.model = model
        self.name = name
        self.global_attention = global_attention
        self.scorer = scorer
        self.cfg: Dict[str, Any] = asdict(self.settings_class(**settings))
        self.tokenizer = None
        self._derived = None  # (what it was made from, the int8 or onnxruntime module): see inference_module
        self._owner_pid = os.getpid()
        # Read by `load()`, not here: `spacy.load` builds the pipe from its config (which still names the
        # checkpoint it was made from) and then reads the saved weights; the checkpoint need not exist there.
        # What a local checkpoint says it is, is checked now (cheap: its config.json), so a checkpoint of
        # another task fails at add_pipe.
        self._checkpoint: Optional[str] = str(checkpoint) if checkpoint else None
        self._revision: Optional[str] = revision or None
        if self._checkpoint:
            layers.check_checkpoint_task(self.model.attrs["task"], self._checkpoint, component=name, new_head=True)

    # ---- model and tokenizer ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read the configured ``checkpoint`` (tokenizer and weights), once: the one step that loads it.

        ``predict``, ``pipe``, ``update``, ``get_loss``, ``initialize`` and saving call it first, so a component
        with a checkpoint works right after ``add_pipe``; call it yourself before reading ``tokenizer``,
        ``module`` or ``max_input_length``. A pipe whose model came from ``nlp.initialize()``, ``from_disk`` or
        ``from_bytes`` has nothing to load."""
        if self._checkpoint and not layers.has_module(self.model):
            self.load_checkpoint(self._checkpoint, revision=self._revision)

    def load_checkpoint(self, path: str, *, revision: Optional[str] = None, new_head: bool = False) -> None:
        """Tokenizer and weights from a HuggingFace LED checkpoint: a directory, or a hub id such as
        ``allenai/led-base-16384[@revision]`` (fetched once into the HuggingFace cache). The checkpoint must hold
        this task's head unless ``new_head`` (``initialize``: a fresh head is trained), since a random head gives
        meaningless output."""
        from ..modeling.hub import resolve_checkpoint
        from ..tokenizer import LEDTokenizer

        path = str(resolve_checkpoint(path, revision=revision))
        layers.check_checkpoint_task(self.model.attrs["task"], path, component=self.name, new_head=new_head,
                                     **self._checkpoint_config())
        self.tokenizer = LEDTokenizer.from_pretrained(path)
        layers.load_checkpoint(self.model, path, **self._checkpoint_config())

    def _checkpoint_config(self) -> Dict[str, Any]:
        """Config changes a task applies when loading a checkpoint (e.g. the classifier's labels)."""
        return {}

    @property
    def module(self):
        """The torch LED; present after ``load()``, ``nlp.initialize()`` or loading a saved pipeline."""
        if not layers.has_module(self.model):
            raise ValueError(self._no_model_message())
        return layers.get_module(self.model)

    @property
    def inference_module(self):
        """The LED predictions run on: ``module`` itself, or with ``quantize = "int8"`` its dynamically
        quantized copy (``modeling.quantize``), made on first use and again whenever the float weights change
        (training steps and loading write them in place, which moves their version counters), or with
        ``runtime = "onnx"`` the export at ``onnx_path`` in onnxruntime. Training and saving always use the
        float ``module``."""
        from ..modeling.quantize import check_quantize, quantize_dynamic_int8

        module = self.module
        runtime = self.cfg.get("runtime")
        mode = None if runtime == "onnx" else check_quantize(self.cfg.get("quantize"))
        if runtime != "onnx" and mode is None:
            return module
        path = self.cfg.get("onnx_path")
        key = (module, runtime, path, mode, tuple(p._version for p in module.parameters()))
        if self._derived is None or self._derived[0] != key:
            derived = self._onnx_module(module, path) if runtime == "onnx" else quantize_dynamic_int8(module)
            self._derived = (key, derived)
        return self._derived[1]

    def _onnx_module(self, module, path: str):
        """With ``runtime = "onnx"``: the export at ``path`` in onnxruntime, in the torch module's shape
        (``spacy_led.onnx.modules``), checked against ``module``'s weights."""
        from ..onnx.modules import OnnxModule

        return OnnxModule(path, module, f"component '{self.name}'")

    def _no_model_message(self) -> str:
        if self._checkpoint:
            return (f"component '{self.name}' has not read its checkpoint {self._checkpoint} yet: call its load() "
                    f"(processing a Doc does it).")
        return (f"component '{self.name}' has no model yet: add it with config={{'checkpoint': "
                f"'allenai/led-base-16384'}} (a hub id or a HuggingFace LED directory), or call nlp.initialize() "
                f"to train one from scratch.")

    def _require_ready(self) -> None:
        self.load()
        if self.tokenizer is None or not layers.has_module(self.model):
            raise ValueError(self._no_model_message())

    @property
    def max_input_length(self) -> int:
        limit = self.module.config.max_encoder_position_embeddings
        if self.cfg["max_length"]:
            limit = min(limit, int(self.cfg["max_length"]))
        return limit

    # ---- Doc -> windows ---------------------------------------------------------------------------------
    def _encode_doc(
        self, doc: Doc, strategy: Optional[Callable[[Doc], Any]] = None, pieces: Optional[Pieces] = None
    ) -> Encoded:
        """The Doc's BPE pieces (``pieces`` when ``_encode_texts`` made them already) and their global mask."""
        if pieces is None:
            pieces = encode_pieces(self.tokenizer, [doc_text(doc)])[0]
        attention: GlobalAttention = to_global_attention((strategy or self.global_attention)(doc), doc)
        # The pieces have no <s>: cut() places it, global when attention.bos says so.
        pieces_only = GlobalAttention(bos=False, char_spans=attention.char_spans) if attention.bos else attention
        mask = global_mask_for_pieces(pieces_only, pieces.offsets, [0] * len(pieces.ids))
        return Encoded(pieces.ids, pieces.offsets, mask, attention.bos)

    def _encode_texts(self, docs: Sequence[Doc]) -> List[Optional[Pieces]]:
        """The BPE pieces of every Doc's text (no special tokens) from one call of the tokenizer over the
        distinct chunks of all the texts (``bpe_chunks``), which it encodes in parallel on all cores
        (tokenizers' threads, outside the GIL): tokenizing is most of the pipe's own work before the model.
        Where that call fails (a text the tokenizer refuses), None for every Doc: each is then encoded alone
        and only the bad one fails."""
        try:
            return encode_pieces(self.tokenizer, [doc_text(doc) for doc in docs])
        except Exception:
            return [None] * len(docs)

    def _window_limits(self) -> WindowLimits:
        tok = self.tokenizer
        overlap = int(self.cfg.get("chunk_overlap", 0))  # only led_qa's windows overlap
        return WindowLimits(self.max_input_length, self.cfg["overflow"], overlap, tok.bos_token_id, tok.eos_token_id)

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

    def _windows(self, doc_index: int, doc: Doc, pieces: Optional[Pieces] = None) -> List[Window]:
        """The windows of one Doc (tasks may override, e.g. one set per question); ``pieces``: its text's
        encoding, when made already."""
        return self._cut(doc_index, self._encode_doc(doc, pieces=pieces))

    def _tensors(self, windows: Sequence[Window]) -> Dict[str, Any]:
        device = self.module.device
        return {k: v.to(device) for k, v in padded(windows, self.tokenizer.pad_token_id).items()}

    # ---- prediction -------------------------------------------------------------------------------------
    def _doc_windows(self, doc_index: int, doc: Doc, pieces: Optional[Pieces] = None) -> List[Window]:
        """The model inputs of one Doc; none for an empty one (it gets an empty prediction)."""
        # ``doc.text.strip()`` without building the text: the first token that is not whitespace answers
        return self._windows(doc_index, doc, pieces) if any(not token.is_space for token in doc) else []

    def predict(self, docs: Iterable[Doc]) -> List[Any]:
        """One prediction per Doc; the Docs are not changed. Raises on the first failing Doc (``pipe`` isolates
        failures instead)."""
        docs = list(docs)
        self._require_ready()
        encodings = self._encode_texts(docs)
        return self._predict_windows(docs, [self._doc_windows(i, doc, pieces)
                                            for i, (doc, pieces) in enumerate(zip(docs, encodings, strict=True))])

    def _predict_windows(self, docs: List[Doc], windows_per_doc: List[List[Window]]) -> List[Any]:
        """The model over the windows of all ``docs`` at once (batched by length), merged back per Doc."""
        if len(docs) != len(windows_per_doc):
            raise ValueError(f"{len(docs)} Docs but windows for {len(windows_per_doc)}.")
        outputs = iter(self._run_windows([w for windows in windows_per_doc for w in windows]))
        predictions = []
        for doc, windows in zip(docs, windows_per_doc):
            parts = [(window, next(outputs)) for window in windows]
            predictions.append(self._merge(doc, parts) if parts else self._empty_prediction(doc))
        return predictions

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
        Doc is yielded, in order (a failed one without annotations).

        Failures before the model (a Doc too long under ``overflow="error"``, a global-attention strategy that
        raises) are found per Doc while the inputs are made, so they cost nothing; the rest of the batch runs
        as one. Only when the model itself fails is the batch run again one Doc at a time, to find the Doc."""
        _one_torch_thread_in_worker_process(self._owner_pid)
        self._require_ready()
        error_handler = self.get_error_handler()
        for docs in util.minibatch(stream, size=batch_size):
            ready: List[int] = []
            windows_per_doc: List[List[Window]] = []
            encodings = self._encode_texts(docs)
            for i, (doc, pieces) in enumerate(zip(docs, encodings, strict=True)):
                try:
                    windows_per_doc.append(self._doc_windows(i, doc, pieces))
                except Exception as err:  # this Doc cannot become model inputs: only it fails
                    error_handler(self.name, self, [doc], err)
                    continue
                ready.append(i)
            ready_docs = [docs[i] for i in ready]
            try:
                predictions = self._predict_windows(ready_docs, windows_per_doc)
            except Exception:
                predictions = self._predict_one_by_one(ready_docs, windows_per_doc, error_handler)
            for doc, prediction in zip(ready_docs, predictions):
                if prediction is not _FAILED:
                    self.set_annotations([doc], [prediction])
            yield from docs

    def _predict_one_by_one(self, docs: List[Doc], windows_per_doc: List[List[Window]], error_handler) -> List[Any]:
        """After a model error in a batch: each Doc's prepared windows alone, so only the failing Doc fails."""
        predictions = []
        for doc, windows in zip(docs, windows_per_doc):
            try:
                predictions.append(self._predict_windows([doc], [windows])[0])
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
        revision: Optional[str] = None,
        tokenizer: Optional[str] = None,
        vocab_size: int = 8000,
    ) -> None:
        """Make the pipe ready to train.

        ``checkpoint`` (here or in the component config; a directory or a hub id, ``revision`` or
        ``org/name@rev`` pinning a hub revision): fine-tune a HuggingFace LED. Otherwise a fresh LED of
        the architecture's shape is built, with the tokenizer at ``tokenizer`` (a directory with vocab.json +
        merges.txt or tokenizer.json), or else a byte-level BPE of ``vocab_size`` learnt from the training
        texts."""
        validate_get_examples(get_examples, f"{type(self).__name__}.initialize")
        self._initialize_from_examples(get_examples)
        if not checkpoint and not layers.has_module(self.model):
            checkpoint, revision = self._checkpoint, revision or self._revision
        if checkpoint:
            self.load_checkpoint(checkpoint, revision=revision, new_head=True)
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

    def training_batch(self, examples: Iterable[Example]) -> Optional[Dict[str, Any]]:
        """The keyword arguments of the torch module's training forward pass for ``examples`` (inputs and gold
        targets, on the module's device; None if no example has a gold annotation): what ``update`` trains on,
        for training loops outside spaCy (``spacy_led.training``)."""
        self._require_ready()
        return self._training_batch(list(examples))

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
        batch = self.training_batch(examples)
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
            "generation_config": (lambda: srsly.json_dumps(layers.generation_settings(self.model)),
                                  lambda b: layers.set_generation_settings(self.model, srsly.json_loads(b))),
            "model": (lambda: self.model.to_bytes(), lambda b: self.model.from_bytes(b)),
        }

    def _load_tokenizer_bytes(self, data: bytes) -> None:
        from ..tokenizer import LEDTokenizer

        self.tokenizer = LEDTokenizer.from_bytes(data)

    def _load_led_config(self, data: bytes) -> None:
        layers.build_from_config(self.model, srsly.json_loads(data))

    def _check_serializable(self) -> None:
        self.load()
        if self.tokenizer is None or not layers.has_module(self.model):
            raise ValueError(f"component '{self.name}' has no model to save yet (no checkpoint, not initialized).")

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        self._check_serializable()
        serializers = {k: getter for k, (getter, _) in self._serializers().items()}
        serializers["vocab"] = lambda: self.vocab.to_bytes(exclude=exclude)
        return util.to_bytes(serializers, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude=tuple()):
        self._checkpoint = None  # the stored model replaces the configured checkpoint
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
        srsly.write_json(path / "generation_config.json", layers.generation_settings(self.model))
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.model.to_disk(path / "model")

    def from_disk(self, path, *, exclude=tuple()):
        from ..tokenizer import LEDTokenizer

        path = util.ensure_path(path)
        self._checkpoint = None  # the stored model replaces the configured checkpoint
        self.cfg.update(srsly.read_json(path / "cfg"))
        self.tokenizer = LEDTokenizer.from_pretrained(path / "tokenizer")
        layers.build_from_config(self.model, srsly.read_json(path / "led_config.json"))
        if (path / "generation_config.json").is_file():  # absent in pipelines saved before it was stored
            layers.set_generation_settings(self.model, srsly.read_json(path / "generation_config.json"))
        self.model.from_disk(path / "model")
        return self


class _Failed:
    """Marks a Doc whose prediction failed and went to the error handler."""

    def __repr__(self) -> str:
        return "<failed>"


_FAILED = _Failed()
