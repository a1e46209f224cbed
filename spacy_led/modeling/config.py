"""LEDConfig: the model's shape, read from and written to HuggingFace's ``config.json``.

A plain dataclass with HuggingFace's field names, so a ``config.json`` written by ``transformers`` loads
unchanged and one written here loads in ``transformers``. Keys this package does not use (``architectures``,
``transformers_version``, task-specific settings, ...) are kept in ``extra`` and written back, so a round trip
loses nothing.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"

# Generation settings a checkpoint may carry (old checkpoints keep them in config.json, newer ones in
# generation_config.json). ``generate()`` uses them as its defaults, as transformers does.
GENERATION_KEYS = (
    "max_length",
    "max_new_tokens",
    "min_length",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
    "num_return_sequences",
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)

# HuggingFace's alternative names for the same settings (``PretrainedConfig.attribute_map``).
ATTRIBUTE_MAP = {
    "num_attention_heads": "encoder_attention_heads",
    "hidden_size": "d_model",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "init_std",
    "num_hidden_layers": "encoder_layers",
}


@dataclass
class LEDConfig:
    """The hyper-parameters of an LED model, defaulting to HuggingFace ``LEDConfig()``'s values.

    Those defaults describe neither led-base nor led-large: always read a checkpoint's ``config.json``.
    ``attention_window`` is the two-sided window (each token sees ``window // 2`` tokens on either side),
    one value for all layers or one per encoder layer.
    """

    vocab_size: int = 50265
    max_encoder_position_embeddings: int = 16384
    max_decoder_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    use_cache: bool = True
    is_encoder_decoder: bool = True
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    decoder_start_token_id: int = 2
    classifier_dropout: float = 0.0
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    attention_window: Union[int, List[int]] = 512
    tie_word_embeddings: bool = True
    id2label: Optional[Dict[int, str]] = None
    problem_type: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.attention_window, int):
            self.attention_window = [self.attention_window] * self.encoder_layers
        self.attention_window = [int(w) for w in self.attention_window]
        if len(self.attention_window) != self.encoder_layers:
            raise ValueError(
                f"attention_window has {len(self.attention_window)} values but the encoder has "
                f"{self.encoder_layers} layers: give one window for all layers or one per layer."
            )
        for layer, window in enumerate(self.attention_window):
            if window <= 0 or window % 2:
                raise ValueError(
                    f"attention_window of encoder layer {layer} is {window}; it must be a positive even number "
                    f"(it is the two-sided window: each token sees window/2 tokens on each side)."
                )
        if self.d_model % self.encoder_attention_heads or self.d_model % self.decoder_attention_heads:
            raise ValueError(
                f"d_model {self.d_model} must be a multiple of encoder_attention_heads "
                f"({self.encoder_attention_heads}) and decoder_attention_heads ({self.decoder_attention_heads})."
            )
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    # ---- conveniences with HuggingFace's names --------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        self.id2label = {i: f"LABEL_{i}" for i in range(int(value))}

    @property
    def label2id(self) -> Dict[str, int]:
        return {label: i for i, label in (self.id2label or {}).items()}

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def generation_defaults(self) -> Dict[str, Any]:
        """The generation settings this checkpoint asks for (``generation_config.json`` or old-style config)."""
        found = {k: self.extra[k] for k in GENERATION_KEYS if k in self.extra}
        found.update(self.extra.get("_generation_config", {}))
        return found

    # ---- dict / JSON --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LEDConfig":
        data = dict(data)
        model_type = data.pop("model_type", "led")
        if model_type != "led":
            raise ValueError(
                f"config has model_type {model_type!r}, not 'led': this is not an LED checkpoint. "
                f"spacy-led reads LED checkpoints such as allenai/led-base-16384."
            )
        for alias, name in ATTRIBUTE_MAP.items():
            if alias in data and name not in data:
                data[name] = data.pop(alias)
            else:
                data.pop(alias, None)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: data.pop(k) for k in list(data) if k in names}
        label2id = data.pop("label2id", None)
        num_labels = data.pop("num_labels", None)
        if kwargs.get("id2label") is None and label2id:
            kwargs["id2label"] = {int(i): label for label, i in label2id.items()}
        config = cls(**kwargs, extra=data)
        if config.id2label is None and num_labels is not None:
            config.num_labels = num_labels
        return config

    def to_dict(self) -> Dict[str, Any]:
        data = copy.deepcopy(self.extra)
        data.pop("_generation_config", None)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            data[f.name] = copy.deepcopy(getattr(self, f.name))
        if self.id2label is None:
            data.pop("id2label")
        else:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
            data["label2id"] = self.label2id
        if self.problem_type is None:
            data.pop("problem_type")
        data["model_type"] = "led"
        return data

    @classmethod
    def from_pretrained(cls, path: Union[str, Path]) -> "LEDConfig":
        """Read ``config.json`` (and ``generation_config.json`` if present) from a checkpoint directory."""
        path = Path(path)
        config_file = path / CONFIG_NAME if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint directory {path} does not exist: give the directory that holds config.json and "
                f"the weights (e.g. a local copy of allenai/led-base-16384)."
            )
        if not config_file.is_file():
            raise FileNotFoundError(
                f"checkpoint directory {path} has no {CONFIG_NAME}: it is not a HuggingFace checkpoint directory."
            )
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file} is not valid JSON: {err}") from err
        config = cls.from_dict(data)
        generation_file = config_file.parent / GENERATION_CONFIG_NAME
        if generation_file.is_file():
            generation = json.loads(generation_file.read_text(encoding="utf-8"))
            config.extra["_generation_config"] = {k: v for k, v in generation.items() if k in GENERATION_KEYS}
        return config

    def save_pretrained(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", "utf-8")
        generation = self.extra.get("_generation_config")
        if generation:
            (path / GENERATION_CONFIG_NAME).write_text(json.dumps(generation, indent=2) + "\n", "utf-8")

    def copy(self, **changes: Any) -> "LEDConfig":
        config = copy.deepcopy(self)
        for key, value in changes.items():
            setattr(config, key, value)
        config.__post_init__()
        return config
