"""``led_summarizer``: an abstractive summary of each Doc, written to ``doc._.summary``, and its score to
``doc._.summary_score``.

Long documents under ``overflow="chunk"`` are summarised window by window and the window summaries joined in
document order (the map step of spacy-llm's map-reduce summaries); with ``reduce_chunks=True`` the joined text
is summarised once more when it fits the model.

The score is what ``generate`` rates the summary with: the beam score (``sequences_scores``: summed
log-probabilities over length ** length_penalty) with beams, the mean token log-probability with greedy search or
sampling; the mean over the windows of a chunked document. Higher is better; users filter weak summaries by it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model

from ..extensions import ensure_doc_attr, ensure_extensions
from .base import LEDPipe, Window
from .settings import GENERATION_ARGUMENTS, SummarizerSettings

# When neither the component config nor the checkpoint sets a length, transformers' default (20 tokens) is
# far too short for a summary of a long document.
DEFAULT_SUMMARY_MAX_LENGTH = 256
Summary = Tuple[str, Optional[float]]



class LEDSummarizer(LEDPipe):
    task = "generation"
    settings_class = SummarizerSettings

    def __init__(self, vocab, model: Model, name: str = "led_summarizer", **kwargs: Any) -> None:
        super().__init__(vocab, model, name, **kwargs)
        ensure_extensions()
        ensure_doc_attr(self.cfg["summary_attr"])
        ensure_doc_attr(f"{self.cfg['summary_attr']}_score")

    def generation_kwargs(self) -> Dict[str, Any]:
        """The settings passed to ``generate``: the named settings, then ``generation_config``, then the
        checkpoint's own defaults."""
        cfg = self.cfg
        kwargs = {argument: cfg[name] for name, argument in GENERATION_ARGUMENTS.items() if cfg[name] is not None}
        kwargs = {**cfg["generation_config"], **kwargs}
        defaults = self.module.generation_config.set_values()
        if not any(k in kwargs or k in defaults for k in ("max_length", "max_new_tokens")):
            kwargs["max_length"] = min(DEFAULT_SUMMARY_MAX_LENGTH, self.module.config.max_decoder_position_embeddings)
        return kwargs

    def _generate(self, tensors: Dict[str, Any]):
        """``generate`` with the configured settings; with a ``seed``, from that seed and without touching the
        global random state, so that the same documents in the same batches get the same summaries."""
        kwargs = dict(self.generation_kwargs(), num_return_sequences=1, return_dict_in_generate=True)
        module = self.inference_module
        if self.cfg["seed"] is None:
            return module.generate(**tensors, **kwargs)
        device = module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.cfg["seed"])
            return module.generate(**tensors, **kwargs)

    def _run_batch(self, windows: List[Window]) -> List[Summary]:
        out = self._generate(self._tensors(windows))
        texts = [text.strip() for text in self.tokenizer.batch_decode(out.sequences.tolist(), skip_special_tokens=True)]
        return list(zip(texts, out.sequences_scores.tolist(), strict=True))

    def _merge(self, doc: Doc, parts: List[Tuple[Window, Summary]]) -> Summary:
        summary = " ".join(text for _, (text, _) in parts if text)
        score = sum(score for _, (_, score) in parts) / len(parts)
        if len(parts) > 1 and self.cfg["reduce_chunks"]:
            return self._reduce(summary, score)
        return summary, score

    def _reduce(self, text: str, score: float) -> Summary:
        """Summarise the joined window summaries again, when they fit in one window (else keep them and their
        mean score)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids or len(ids) + 2 > self.max_input_length:
            return text, score
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

    def _empty_prediction(self, doc: Doc) -> Summary:
        return "", None

    def set_annotations(self, docs, summaries: List[Summary]) -> None:
        attr = self.cfg["summary_attr"]
        for doc, (summary, score) in zip(docs, summaries, strict=True):
            setattr(doc._, attr, summary)
            setattr(doc._, f"{attr}_score", score)
            self._set_global_attention_spans(doc)

    def to_record(self, doc: Doc) -> Dict[str, Any]:
        """This component's annotations of ``doc`` as JSON fields (``spacy-led apply`` writes one record per
        Doc from the hooks of the pipeline's components)."""
        attr = self.cfg["summary_attr"]
        return {attr: getattr(doc._, attr), f"{attr}_score": getattr(doc._, f"{attr}_score")}
