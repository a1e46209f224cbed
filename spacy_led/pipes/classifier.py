"""``led_classifier``: one score per label in ``doc.cats`` and the best label on ``doc._.<label_attr>``.

transformers' LED classification head pools the decoder state at the last ``</s>``; documents longer than the
decoder's positions are decoded in segments (see ``LEDModel._segment``), so they work up to the encoder's full
length. Documents longer than that, under ``overflow="chunk"``, get the mean of their windows' scores.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model

from ..extensions import ensure_doc_attr, ensure_extensions
from .base import LEDPipe, Window
from .settings import ClassifierSettings


class LEDClassifier(LEDPipe):
    task = "classification"
    settings_class = ClassifierSettings

    def __init__(self, vocab, model: Model, name: str = "led_classifier", **kwargs: Any) -> None:
        super().__init__(vocab, model, name, **kwargs)
        ensure_extensions()
        ensure_doc_attr(self.cfg["label_attr"])

    @property
    def labels(self) -> Tuple[str, ...]:
        """The configured labels, else those of the checkpoint once read (``load()``) or of the training data
        once initialized."""
        return tuple(self.cfg["labels"])

    def add_label(self, label: str) -> int:
        if label in self.cfg["labels"]:
            return 0
        self.cfg["labels"].append(label)
        return 1

    def _checkpoint_config(self) -> Dict[str, Any]:
        changes: Dict[str, Any] = {
            "problem_type": "multi_label_classification" if self.cfg["multi_label"] else "single_label_classification"
        }
        if self.cfg["labels"]:
            changes["id2label"] = dict(enumerate(self.cfg["labels"]))
        return changes

    def load_checkpoint(self, path: str, *, revision: Optional[str] = None, new_head: bool = False) -> None:
        """Labels come from the config when given (a new head is trained for them), else from the checkpoint."""
        super().load_checkpoint(path, revision=revision, new_head=new_head)
        if not self.cfg["labels"]:
            id2label = self.module.config.id2label or {}
            self.cfg["labels"] = [id2label[i] for i in sorted(id2label)]

    # ---- training -----------------------------------------------------------------------------------------
    def _initialize_from_examples(self, get_examples) -> None:
        if not self.cfg["labels"]:
            labels = sorted({label for eg in get_examples() for label in eg.reference.cats})
            if not labels:
                raise ValueError(
                    f"component '{self.name}' found no labels: give `labels` in its config or training examples "
                    f"with doc.cats."
                )
            self.cfg["labels"] = labels

    def _adapt_loaded_model(self) -> None:
        """A checkpoint loaded before the labels were known gets a fresh head for the training labels."""
        module = self.module
        module.set_labels(self.cfg["labels"], problem_type=self._checkpoint_config()["problem_type"])
        self.model.attrs["led_config"] = module.config.to_dict()

    def _training_batch(self, examples: List[Example]) -> Optional[Dict[str, Any]]:
        """Every window of a long document trains on the document's labels."""
        import torch

        windows, targets = [], []
        for i, eg in enumerate(examples):
            cats = eg.reference.cats
            if not cats or not eg.predicted.text.strip():
                continue
            unknown = set(cats) - set(self.labels)
            if unknown:
                raise ValueError(f"example {i} has labels {sorted(unknown)} that component '{self.name}' does not "
                                 f"know ({list(self.labels)}): add them to its `labels`.")
            target = [float(cats.get(label, 0.0)) for label in self.labels]
            if not self.cfg["multi_label"]:
                target = max(range(len(target)), key=target.__getitem__)
            for window in self._windows(i, eg.predicted):
                windows.append(window)
                targets.append(target)
        if not windows:
            return None
        batch = self._tensors(windows)
        dtype = torch.float32 if self.cfg["multi_label"] else torch.long
        batch["labels"] = torch.tensor(targets, dtype=dtype, device=batch["input_ids"].device)
        return batch

    def _run_batch(self, windows: List[Window]) -> List[List[float]]:
        import torch

        logits = self.inference_module(**self._tensors(windows)).logits.float()
        scores = torch.sigmoid(logits) if self.cfg["multi_label"] else torch.softmax(logits, dim=-1)
        return scores.cpu().tolist()

    def _merge(self, doc: Doc, parts: List[Tuple[Window, List[float]]]) -> Dict[str, float]:
        columns = list(zip(*(scores for _, scores in parts)))
        return {label: sum(col) / len(col) for label, col in zip(self.labels, columns)}

    def _empty_prediction(self, doc: Doc) -> Dict[str, float]:
        return {}

    def set_annotations(self, docs: Iterable[Doc], predictions: Iterable[Dict[str, float]]) -> None:
        attr = self.cfg["label_attr"]
        for doc, cats in zip(docs, predictions):
            doc.cats.update(cats)
            best = max(cats, key=cats.get) if cats else None
            if best is not None and self.cfg["multi_label"] and cats[best] < self.cfg["threshold"]:
                best = None
            setattr(doc._, attr, best)
            self._set_global_attention_spans(doc)

    def to_record(self, doc: Doc) -> Dict[str, Any]:
        """``cats`` (label -> score) and the chosen label as JSON fields, for ``spacy-led apply``."""
        attr = self.cfg["label_attr"]
        return {"cats": {label: float(score) for label, score in doc.cats.items()}, attr: getattr(doc._, attr)}
