"""``led_summarizer``: an abstractive summary of each Doc, written to ``doc._.summary``.

Long documents under ``overflow="chunk"`` are summarised window by window and the window summaries joined in
document order (the map step of spacy-llm's map-reduce summaries); with ``reduce_chunks=True`` the joined text
is summarised once more when it fits the model.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model

from ..extensions import ensure_doc_attr, ensure_extensions
from .base import LEDPipe, Window
from .settings import SummarizerSettings

# When neither the component config nor the checkpoint sets a length, transformers' default (20 tokens) is
# far too short for a summary of a long document.
DEFAULT_SUMMARY_MAX_LENGTH = 256



class LEDSummarizer(LEDPipe):
    task = "generation"
    settings_class = SummarizerSettings

    def __init__(self, vocab, model: Model, name: str = "led_summarizer", **kwargs: Any) -> None:
        super().__init__(vocab, model, name, **kwargs)
        ensure_extensions()
        ensure_doc_attr(self.cfg["summary_attr"])

    def generation_kwargs(self) -> Dict[str, Any]:
        """The settings passed to ``generate``: the config's, then the checkpoint's own defaults."""
        cfg = self.cfg
        kwargs = {
            "num_beams": cfg["num_beams"],
            "max_length": cfg["max_summary_length"],
            "max_new_tokens": cfg["max_new_tokens"],
            "min_length": cfg["min_summary_length"],
            "length_penalty": cfg["length_penalty"],
            "no_repeat_ngram_size": cfg["no_repeat_ngram_size"],
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        defaults = self.module.config.generation_defaults
        if not any(k in kwargs or k in defaults for k in ("max_length", "max_new_tokens")):
            kwargs["max_length"] = min(DEFAULT_SUMMARY_MAX_LENGTH, self.module.config.max_decoder_position_embeddings)
        return kwargs

    def _run_batch(self, windows: List[Window]) -> List[str]:
        tensors = self._tensors(windows)
        ids = self.module.generate(**tensors, **self.generation_kwargs())
        return [text.strip() for text in self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]

    def _merge(self, doc: Doc, parts: List[Tuple[Window, str]]) -> str:
        summary = " ".join(text for _, text in parts if text)
        if len(parts) > 1 and self.cfg["reduce_chunks"]:
            return self._reduce(summary)
        return summary

    def _reduce(self, text: str) -> str:
        """Summarise the joined window summaries again, when they fit in one window."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids or len(ids) + 2 > self.max_input_length:
            return text
        window = Window(0, [self.tokenizer.bos_token_id, *ids, self.tokenizer.eos_token_id],
                        [1] + [0] * (len(ids) + 1), 1, [])
        return self._run_windows([window])[0]

    # ---- training -----------------------------------------------------------------------------------------
    def _training_texts(self, example: Example) -> List[str]:
        return [example.reference.text, getattr(example.reference._, self.cfg["summary_attr"]) or ""]

    def _training_batch(self, examples: List[Example]) -> Optional[Dict[str, Any]]:
        """Teacher forcing: ``labels`` are the gold summary's ids (``<s> summary </s>``, -100 on padding); the
        model shifts them right into decoder inputs and computes the cross-entropy inside torch."""
        attr = self.cfg["summary_attr"]
        windows, targets = [], []
        for i, eg in enumerate(examples):
            summary = getattr(eg.reference._, attr, None)
            if summary and eg.predicted.text.strip():
                windows.append(self._training_window(i, eg.predicted))
                targets.append(summary)
        if not windows:
            return None
        batch = self._tensors(windows)
        limit = self.module.config.max_decoder_position_embeddings
        encoded = self.tokenizer(targets, padding=True, max_length=limit, truncation=True, return_tensors="pt")
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        batch["labels"] = labels.to(batch["input_ids"].device)
        return batch

    def _empty_prediction(self, doc: Doc) -> str:
        return ""

    def set_annotations(self, docs, summaries) -> None:
        for doc, summary in zip(docs, summaries):
            setattr(doc._, self.cfg["summary_attr"], summary)
            self._set_global_attention_spans(doc)

    def to_record(self, doc: Doc) -> Dict[str, Any]:
        """This component's annotations of ``doc`` as JSON fields (``spacy-led apply`` writes one record per
        Doc from the hooks of the pipeline's components)."""
        attr = self.cfg["summary_attr"]
        return {attr: getattr(doc._, attr)}
