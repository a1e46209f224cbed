"""GenerationConfig: the generation settings of a checkpoint, or of one ``generate()`` call, with transformers' names.

A checkpoint keeps them in ``generation_config.json`` (old checkpoints in ``config.json``, see
``from_model_config``); ``checkpoint.py`` reads them into ``model.generation_config``, and ``save_pretrained``
writes them back. As in transformers 5, a field that is None is *unset*: ``generate()`` takes each setting from
its arguments, then from the ``generation_config`` it is given, then from ``model.generation_config``, then from
``GLOBAL_DEFAULTS`` (transformers' ``GenerationConfig._get_default_generation_params``).

Values are checked when the object is made, so a bad setting fails where it is written, not halfway through a
corpus. transformers settings that spacy-led does not implement (``typical_p``, ``num_beam_groups``, ...) are an
error when a caller sets them to anything but their no-op value; when a checkpoint's file sets them, they are
named in a warning and not applied, so the checkpoint still loads. Settings that only change how transformers
computes (``use_cache``, ``cache_implementation``, assistant-model tuning, ...) and file metadata
(``transformers_version``) are kept in ``extra`` and written back unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

logger = logging.getLogger("spacy_led")

GENERATION_CONFIG_NAME = "generation_config.json"

# transformers' global defaults for the settings spacy-led implements (applied when nothing else sets them).
GLOBAL_DEFAULTS: Dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "renormalize_logits": False,
    "num_return_sequences": 1,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
}

# transformers settings spacy-led does not implement, with the value that makes each a no-op there.
UNSUPPORTED_NO_OP_VALUES: Dict[str, Any] = {
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "top_h": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "dola_layers": None,
    "constraints": None,
    "force_words_ids": None,
    "forced_decoder_ids": None,
    "sequence_bias": None,
    "guidance_scale": 1.0,
    "exponential_decay_length_penalty": None,
    "remove_invalid_values": False,
    "watermarking_config": None,
    "stop_strings": None,
    "max_time": None,
    "token_healing": False,
    "use_mtp": False,
    "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None,
    "output_attentions": False,
    "output_hidden_states": False,
}

# transformers settings that never change the generated output (how it computes, assisted decoding's tuning)
# and file metadata: accepted, kept, not used.
OUTPUT_NEUTRAL = frozenset({
    "use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile",
    "prefill_chunk_size", "low_memory", "continuous_batching_config", "is_assistant", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind",
    "assistant_ensemble_weight", "speculation_type", "max_matching_ngram_size", "return_legacy_cache",
    "transformers_version", "_from_model_config", "_commit_hash",
})

TokenIds = Union[int, List[int], None]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not a bool ({value!r}).")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


def _check_number(name: str, value: Any, *, positive: bool = False) -> float:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind}; got {value!r}.")
    return float(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def _check_ids(name: str, value: Any) -> List[int]:
    values = list(value) if isinstance(value, (list, tuple)) else None
    if values is None:
        raise TypeError(f"{name} must be a list of token ids; got {value!r}.")
    return [_check_int(name, v, 0) for v in values]


def _check_token_ids(name: str, value: Any) -> Union[int, List[int]]:
    """One id, or a list of ids (``eos_token_id`` and ``forced_eos_token_id`` may be several)."""
    if isinstance(value, (list, tuple)):
        ids = _check_ids(name, value)
        if not ids:
            raise ValueError(f"{name} must name at least one token; got an empty list.")
        return ids
    return _check_int(name, value, 0)


def _check_bad_words(name: str, value: Any) -> List[List[int]]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of token-id lists (e.g. [[1037], [2091, 17]]); got {value!r}.")
    words = []
    for word in value:
        if not isinstance(word, (list, tuple)) or not word:
            raise ValueError(f"{name} must be a list of non-empty token-id lists; {word!r} is not one.")
        words.append(_check_ids(name, word))
    return words


def _check_early_stopping(name: str, value: Any) -> Union[bool, str]:
    if value not in (True, False, "never") or not isinstance(value, (bool, str)):
        raise ValueError(f"{name} must be True, False or 'never'; got {value!r}.")
    return value


def _check_top_p(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1; got {value}.")
    return value


_CHECKS = {
    "max_length": lambda n, v: _check_int(n, v, 2),
    "max_new_tokens": lambda n, v: _check_int(n, v, 1),
    "min_length": lambda n, v: _check_int(n, v, 0),
    "min_new_tokens": lambda n, v: _check_int(n, v, 0),
    "early_stopping": _check_early_stopping,
    "do_sample": _check_bool,
    "num_beams": lambda n, v: _check_int(n, v, 1),
    "temperature": lambda n, v: _check_number(n, v, positive=True),
    "top_k": lambda n, v: _check_int(n, v, 0),
    "top_p": _check_top_p,
    "repetition_penalty": lambda n, v: _check_number(n, v, positive=True),
    "encoder_repetition_penalty": lambda n, v: _check_number(n, v, positive=True),
    "length_penalty": _check_number,
    "no_repeat_ngram_size": lambda n, v: _check_int(n, v, 0),
    "encoder_no_repeat_ngram_size": lambda n, v: _check_int(n, v, 0),
    "bad_words_ids": _check_bad_words,
    "renormalize_logits": _check_bool,
    "forced_bos_token_id": lambda n, v: _check_int(n, v, 0),
    "forced_eos_token_id": _check_token_ids,
    "suppress_tokens": _check_ids,
    "begin_suppress_tokens": _check_ids,
    "num_return_sequences": lambda n, v: _check_int(n, v, 1),
    "output_scores": _check_bool,
    "output_logits": _check_bool,
    "return_dict_in_generate": _check_bool,
    "pad_token_id": lambda n, v: _check_int(n, v, 0),
    "bos_token_id": lambda n, v: _check_int(n, v, 0),
    "eos_token_id": _check_token_ids,
    "decoder_start_token_id": lambda n, v: _check_int(n, v, 0),
}


@dataclass
class GenerationConfig:
    """Generation settings with transformers' names; None means unset (see the module docstring)."""

    max_length: Optional[int] = None
    max_new_tokens: Optional[int] = None
    min_length: Optional[int] = None
    min_new_tokens: Optional[int] = None
    early_stopping: Union[bool, str, None] = None
    do_sample: Optional[bool] = None
    num_beams: Optional[int] = None
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    encoder_repetition_penalty: Optional[float] = None
    length_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    encoder_no_repeat_ngram_size: Optional[int] = None
    bad_words_ids: Optional[List[List[int]]] = None
    renormalize_logits: Optional[bool] = None
    forced_bos_token_id: Optional[int] = None
    forced_eos_token_id: TokenIds = None
    suppress_tokens: Optional[List[int]] = None
    begin_suppress_tokens: Optional[List[int]] = None
    num_return_sequences: Optional[int] = None
    output_scores: Optional[bool] = None
    output_logits: Optional[bool] = None
    return_dict_in_generate: Optional[bool] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: TokenIds = None
    decoder_start_token_id: Optional[int] = None
    # Output-neutral settings and metadata (see OUTPUT_NEUTRAL), and, from checkpoint files only, unsupported
    # settings that were warned about. Written back by ``to_dict``.
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, check(name, value))

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: Optional[str] = None) -> "GenerationConfig":
        """Settings by transformers' names. An unknown name, or an unsupported setting with an effect, is an
        error; with ``source`` (a checkpoint file) an unsupported setting is a warning and is not applied."""
        data = {name: value for name, value in data.items() if value is not None}  # None: unset, as in transformers
        kwargs = {name: data.pop(name) for name in list(data) if name in _CHECKS}
        unknown = [name for name in data if name not in OUTPUT_NEUTRAL and name not in UNSUPPORTED_NO_OP_VALUES]
        ignored = unknown + unsupported_settings(data)
        if ignored and source is None:
            raise ValueError(unsupported_message(ignored))
        if ignored:
            logger.warning("%s sets %s, which spacy-led's generate() does not implement: not applied. Supported "
                           "settings: %s.", source, ", ".join(f"{k}={data[k]!r}" for k in ignored),
                           ", ".join(SUPPORTED))
        return cls(**kwargs, extra=data)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path]) -> Optional["GenerationConfig"]:
        """The ``generation_config.json`` of a checkpoint directory, or None if it has none."""
        file = Path(path) / GENERATION_CONFIG_NAME
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{file} must hold a JSON object of generation settings; got {type(data).__name__}.")
        return cls.from_dict(data, source=str(file))

    @classmethod
    def from_model_config(cls, config) -> "GenerationConfig":
        """For checkpoints without ``generation_config.json``: the model config's special tokens and any
        generation settings an old ``config.json`` carries (as transformers' ``from_model_config``)."""
        found = {key: value for key, value in config.extra.items()
                 if value is not None and (key in _CHECKS or key in UNSUPPORTED_NO_OP_VALUES)}
        for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            if getattr(config, key, None) is not None:
                found[key] = getattr(config, key)
        return cls.from_dict(found, source="config.json")

    # ---- serialization ------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The set settings (None fields left out, as transformers writes its diff) and the kept extras."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in data.items() if v is not None}, **self.extra}

    def save_pretrained(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        (path / GENERATION_CONFIG_NAME).write_text(text, encoding="utf-8")

    def set_values(self) -> Dict[str, Any]:
        """The supported settings that are set (not None)."""
        return {name: getattr(self, name) for name in SUPPORTED if getattr(self, name) is not None}


SUPPORTED = tuple(_CHECKS)


def unsupported_settings(settings: Mapping[str, Any]) -> List[str]:
    """The names in ``settings`` that are unsupported transformers settings set to something with an effect."""
    active = []
    for name, value in settings.items():
        if name in UNSUPPORTED_NO_OP_VALUES and value is not None and value != UNSUPPORTED_NO_OP_VALUES[name]:
            active.append(name)
    return active


def unsupported_message(names: Sequence[str]) -> str:
    return (
        f"generate() does not support {', '.join(repr(n) for n in names)}. spacy-led implements these of "
        f"transformers' generation settings: {', '.join(SUPPORTED)} (and accepts the output-neutral "
        f"{', '.join(sorted(n for n in OUTPUT_NEUTRAL if not n.startswith('_')))})."
    )
