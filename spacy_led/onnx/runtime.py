"""Running an ONNX export (``export.py``) in onnxruntime: encoder, generation and the task heads.

``OnnxLED(path)`` takes and returns numpy arrays (torch tensors are accepted as input). ``generate`` is
``LEDForConditionalGeneration.generate``'s own search (``spacy_led.modeling.generation.search``: greedy,
sampling, beam search, every score processor, the same arguments and outputs) stepping the exported decoder
graphs instead of the torch decoder, so both give the same ids for the same settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import torch

from ..modeling.config import LEDConfig
from ..modeling.generation_config import GenerationConfig
from .export import FORMAT_VERSION, MANIFEST, cache_names, weights_fingerprint

ArrayLike = Union[np.ndarray, torch.Tensor]


class OnnxExportError(ValueError):
    """An export directory that is missing, incomplete, of another format, or made from other weights."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "running LED on onnxruntime needs the 'onnx' extra: pip install \"spacy-led[onnx]\"."
        ) from err
    return onnxruntime


def read_manifest(path: Union[str, Path]) -> Dict[str, Any]:
    """The export's ``onnx_export.json``, checked: every graph file present, a format this version reads."""
    directory = Path(path).expanduser()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise OnnxExportError(
            f"{directory} is no spacy-led ONNX export (no {MANIFEST}): make one with "
            f"`spacy-led export-onnx CHECKPOINT_OR_PIPELINE {directory}`."
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise OnnxExportError(f"{directory} was written in export format {manifest.get('format_version')}; this "
                              f"spacy-led reads format {FORMAT_VERSION}: export the model again.")
    missing = [name for name in manifest["files"].values() if not (directory / name).is_file()]
    if missing:
        raise OnnxExportError(f"the ONNX export {directory} lacks {missing}: export the model again.")
    return manifest


def _numpy(value: Optional[ArrayLike], dtype=np.int64) -> Optional[np.ndarray]:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


class OnnxLED:
    """The graphs of one export directory in onnxruntime sessions (made when first used).

    ``session_options``: an ``onnxruntime.SessionOptions`` (e.g. thread counts); ``providers``: onnxruntime's
    execution providers (default: the CPU)."""

    def __init__(self, path: Union[str, Path], *, session_options=None, providers: Optional[List[str]] = None):
        self.path = Path(path).expanduser()
        self.manifest = read_manifest(self.path)
        self.task: str = self.manifest["task"]
        self.config = LEDConfig.from_pretrained(self.path)
        self.generation_config = (GenerationConfig.from_pretrained(self.path) if self.task == "generation"
                                  else GenerationConfig.from_model_config(self.config))
        self._session_options = session_options
        self._providers = providers or ["CPUExecutionProvider"]
        self._sessions: Dict[str, Any] = {}
        _onnxruntime()  # fail now, not at the first document, when the extra is missing

    def check_matches(self, module: torch.nn.Module, what: str) -> None:
        """Raise ``OnnxExportError`` unless the export was made from ``module``'s weights (``what`` names the
        model in the message)."""
        if weights_fingerprint(module) != self.manifest["weights_fingerprint"]:
            raise OnnxExportError(
                f"the ONNX export {self.path} was made from other weights than {what}: export this model again "
                f"(spacy-led export-onnx) or point onnx_path at its export."
            )

    def session(self, graph: str):
        if graph not in self._sessions:
            if graph not in self.manifest["files"]:
                raise OnnxExportError(f"the ONNX export {self.path} ({self.task}) has no {graph} graph.")
            ort = _onnxruntime()
            self._sessions[graph] = ort.InferenceSession(str(self.path / self.manifest["files"][graph]),
                                                         sess_options=self._session_options,
                                                         providers=self._providers)
        return self._sessions[graph]

    # ---- encoder ------------------------------------------------------------------------------------------
    def _encoder_inputs(self, input_ids, attention_mask, global_attention_mask):
        ids = _numpy(input_ids)
        if ids is None or ids.ndim != 2 or 0 in ids.shape:
            raise ValueError(f"input_ids must have shape (batch, length) with at least one token; got "
                             f"{None if ids is None else ids.shape}.")
        limit = self.config.max_encoder_position_embeddings
        if ids.shape[1] > limit:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens but the model has only {limit} positions: "
                             f"truncate the input or split it into chunks.")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"input_ids holds ids outside the vocabulary (0..{self.config.vocab_size - 1}).")
        mask = np.ones_like(ids) if attention_mask is None else _numpy(attention_mask)
        glob = np.zeros_like(ids) if global_attention_mask is None else _numpy(global_attention_mask)
        for name, value in (("attention_mask", mask), ("global_attention_mask", glob)):
            if value.shape != ids.shape:
                raise ValueError(f"{name} has shape {value.shape} but input_ids has {ids.shape}: they must match.")
        return ids, mask, glob

    def encode(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
               global_attention_mask: Optional[ArrayLike] = None) -> np.ndarray:
        """Encoder hidden states (B, L, d_model), float32."""
        ids, mask, glob = self._encoder_inputs(input_ids, attention_mask, global_attention_mask)
        return self.session("encoder").run(
            None, {"input_ids": ids, "attention_mask": mask, "global_attention_mask": glob})[0]

    # ---- generation ---------------------------------------------------------------------------------------
    def generate(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
                 global_attention_mask: Optional[ArrayLike] = None,
                 generation_config: Union[GenerationConfig, Mapping[str, Any], None] = None, **kwargs: Any):
        """``LEDForConditionalGeneration.generate`` on the exported graphs: the same arguments (without a
        ``global_attention_mask`` the first token of every row is global), the same ids, as numpy; with
        ``return_dict_in_generate`` the same output object, its tensors as numpy arrays."""
        from ..modeling.generation import resolve_settings, search

        if self.task != "generation":
            raise OnnxExportError(f"the ONNX export {self.path} is a {self.task} model: it does not generate.")
        settings = resolve_settings(self, generation_config, **kwargs)
        ids = _numpy(input_ids)
        if global_attention_mask is None and ids is not None and ids.ndim == 2:
            global_attention_mask = np.zeros_like(ids)
            global_attention_mask[:, 0] = 1
        ids, mask, glob = self._encoder_inputs(ids, attention_mask, global_attention_mask)
        encoded = self.session("encoder").run(
            None, {"input_ids": ids, "attention_mask": mask, "global_attention_mask": glob})[0]
        search_mask = None if attention_mask is None else torch.from_numpy(mask)
        with torch.no_grad():
            out = search(settings, torch.from_numpy(ids), torch.from_numpy(encoded), search_mask,
                         lambda encoded_rows, rows_mask, group: _OnnxDecoderRun(self, encoded_rows, rows_mask, group))
        if isinstance(out, torch.Tensor):
            return out.numpy()
        for name, value in vars(out).items():
            if isinstance(value, torch.Tensor):
                setattr(out, name, value.numpy())
            elif isinstance(value, tuple):
                setattr(out, name, tuple(v.numpy() for v in value))
        return out

    # ---- task heads ---------------------------------------------------------------------------------------
    def head_logits(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
                    global_attention_mask: Optional[ArrayLike] = None) -> np.ndarray:
        """The head's logits at every input position (B, L, X), the decoder reading the input shifted right as
        ``LEDForQuestionAnswering`` / ``LEDForSequenceClassification`` do (in segments of the decoder's positions
        past its length, see ``LEDModel._segment``)."""
        ids, mask, glob = self._encoder_inputs(input_ids, attention_mask, global_attention_mask)
        encoded = self.session("encoder").run(
            None, {"input_ids": ids, "attention_mask": mask, "global_attention_mask": glob})[0]
        config = self.config
        shifted = np.empty_like(ids)
        shifted[:, 0] = config.decoder_start_token_id
        shifted[:, 1:] = ids[:, :-1]
        batch, length = ids.shape
        limit = config.max_decoder_position_embeddings
        segments = -(-length // limit) if length > limit else 1
        if segments > 1:
            padded = np.full((batch, segments * limit), config.pad_token_id, dtype=np.int64)
            padded[:, :length] = shifted
            shifted = padded
        decoder_ids = shifted.reshape(batch, segments, -1)
        logits = self.session("head").run(None, {"encoder_hidden_states": encoded, "attention_mask": mask,
                                                 "decoder_input_ids": decoder_ids})[0]
        return logits.reshape(batch, -1, logits.shape[-1])[:, :length]

    def question_answering(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
                           global_attention_mask: Optional[ArrayLike] = None):
        """(start_logits, end_logits), each (B, L), as ``LEDForQuestionAnswering`` gives them."""
        if self.task != "question_answering":
            raise OnnxExportError(f"the ONNX export {self.path} is a {self.task} model, not question answering.")
        logits = self.head_logits(input_ids, attention_mask, global_attention_mask)
        return logits[..., 0], logits[..., 1]

    def classify(self, input_ids: ArrayLike, attention_mask: Optional[ArrayLike] = None,
                 global_attention_mask: Optional[ArrayLike] = None) -> np.ndarray:
        """Classification logits (B, num_labels) at each row's last ``</s>``, as ``LEDForSequenceClassification``."""
        if self.task != "classification":
            raise OnnxExportError(f"the ONNX export {self.path} is a {self.task} model, not classification.")
        ids = _numpy(input_ids)
        logits = self.head_logits(ids, attention_mask, global_attention_mask)
        is_eos = ids == self.config.eos_token_id
        missing = np.flatnonzero(~is_eos.any(axis=1))
        if missing.size:
            raise ValueError(f"rows {missing.tolist()} of input_ids hold no </s> (id {self.config.eos_token_id}); "
                             f"classification pools the decoder state at the last </s>: encode the text with the "
                             f"tokenizer's special tokens.")
        last = ids.shape[1] - 1 - np.argmax(is_eos[:, ::-1], axis=1)
        return logits[np.arange(ids.shape[0]), last]


class _OnnxCache:
    """The decoder's self-attention keys/values of the rows being generated, as numpy (rows, H, T, D) per
    layer; ``reorder`` is ``DecoderCache.reorder``."""

    def __init__(self):
        self.self_kv: List[np.ndarray] = []

    def reorder(self, beam_idx: torch.Tensor) -> None:
        index = beam_idx.numpy()
        self.self_kv = [np.take(tensor, index, axis=0) for tensor in self.self_kv]


class _OnnxDecoderRun:
    """``decoder_step.DecoderStep`` on the exported decoder graphs: the first step runs ``decoder_init`` (which
    also computes the cross-attention keys/values, once per input), later steps ``decoder_step``."""

    def __init__(self, model: OnnxLED, encoded: torch.Tensor, mask: Optional[torch.Tensor], group: int):
        self.model = model
        self.encoded = encoded.numpy()
        self.mask = np.ones(self.encoded.shape[:2], dtype=np.int64) if mask is None else mask.numpy()
        self.group = group
        self.cache = _OnnxCache()
        self.cross: List[np.ndarray] = []
        layers = model.manifest["decoder_layers"]
        self._present = cache_names(layers, "present")
        self._past = cache_names(layers, "past")
        self._cross_names = cache_names(layers, "cross")

    def logits(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Float32 next-token logits (rows, vocab) after feeding one token per row."""
        batch = self.encoded.shape[0]
        ids = last_tokens.numpy().astype(np.int64).reshape(batch, self.group)
        if not self.cross:
            outputs = self.model.session("decoder_init").run(
                None, {"encoder_hidden_states": self.encoded, "attention_mask": self.mask, "decoder_input_ids": ids})
            layers = len(self._present)
            present, self.cross = outputs[1 : 1 + layers], outputs[1 + layers :]
        else:
            feed = {"decoder_input_ids": ids, "attention_mask": self.mask}
            feed.update((name, kv.reshape(batch, self.group, *kv.shape[1:]))
                        for name, kv in zip(self._past, self.cache.self_kv, strict=True))
            feed.update(zip(self._cross_names, self.cross, strict=True))
            outputs = self.model.session("decoder_step").run(None, feed)
            present = outputs[1:]
        self.cache.self_kv = [kv.reshape(batch * self.group, *kv.shape[2:]) for kv in present]
        return torch.from_numpy(outputs[0].reshape(batch * self.group, -1))

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Make row i continue row ``beam_idx[i]`` (a beam-search step)."""
        self.cache.reorder(beam_idx)

    def keep_inputs(self, keep: torch.Tensor) -> torch.Tensor:
        """Drop the inputs not in ``keep`` with their decoder rows; returns the kept decoder rows' indices."""
        offsets = torch.arange(self.group)
        rows = (keep[:, None] * self.group + offsets).flatten()
        self.cache.reorder(rows)
        index = keep.numpy()
        self.cross = [np.take(kv, index, axis=0) for kv in self.cross]
        self.encoded = np.take(self.encoded, index, axis=0)
        self.mask = np.take(self.mask, index, axis=0)
        return rows
