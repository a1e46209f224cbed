"""LEDConfig: the model's shape, read from and written to HuggingFace's ``config.json``.

A dataclass with HuggingFace's field names that takes transformers' keyword arguments, so
``LEDConfig(**transformers_config.to_dict())``, a ``config.json`` written by ``transformers`` and one written here
all load unchanged. Keys this package does not use (``architectures``, ``transformers_version``, task-specific
settings, ...) are kept in ``extra``, readable as attributes and written back, so a round trip loses nothing.
transformers' alternative names (``hidden_size``, ``num_attention_heads``, ...) and its label settings
(``num_labels``, ``id2label``, ``label2id``) work as they do there.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

CONFIG_NAME = "config.json"

# transformers' alternative names for the same settings (``LEDConfig.attribute_map``), accepted as keyword
# arguments and attributes.
ATTRIBUTE_MAP = {
    "num_attention_heads": "encoder_attention_heads",
    "hidden_size": "d_model",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "init_std",
    "num_hidden_layers": "encoder_layers",
}

# Settings that are properties over ``id2label`` rather than fields.
LABEL_PROPERTIES = ("num_labels", "label2id")


@dataclass(init=False)
class LEDConfig:
    """The hyper-parameters of an LED model, defaulting to HuggingFace ``LEDConfig()``'s values.

    Those defaults describe neither led-base nor led-large: always read a checkpoint's ``config.json``.
    ``attention_window`` is the two-sided window (each token sees ``window // 2`` tokens on either side),
    one value for all layers or one per encoder layer.

    ``id2label`` stays None until labels are given (transformers fills in two generic labels): a checkpoint
    that names no labels is told apart from one trained on ``LABEL_0``/``LABEL_1``; ``num_labels`` is 2 then,
    as in transformers. ``label2id`` is always derived from ``id2label``, so the two never disagree.
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

    def __init__(self, **kwargs: Any) -> None:
        """Keyword arguments as transformers' ``LEDConfig`` takes them (see the class docstring)."""
        kwargs = dict(kwargs)
        model_type = kwargs.pop("model_type", "led")
        if model_type != "led":
            raise ValueError(
                f"config has model_type {model_type!r}, not 'led': this is not an LED checkpoint. "
                f"spacy-led reads LED checkpoints such as allenai/led-base-16384."
            )
        for alias, name in ATTRIBUTE_MAP.items():
            if alias not in kwargs:
                continue
            value = kwargs.pop(alias)
            if name in kwargs and kwargs[name] != value:
                raise ValueError(
                    f"LEDConfig got {alias}={value!r} and {name}={kwargs[name]!r}; {alias} is transformers' other "
                    f"name for {name}: give one of them."
                )
            kwargs[name] = value
        num_labels = kwargs.pop("num_labels", None)
        label2id = kwargs.pop("label2id", None)
        extra = dict(kwargs.pop("extra", None) or {})
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            object.__setattr__(self, f.name, kwargs.pop(f.name, default))
        extra.update(kwargs)
        object.__setattr__(self, "extra", extra)
        if self.id2label is None and label2id:
            self.label2id = label2id
        if num_labels is not None:
            if self.id2label is not None and len(self.id2label) != num_labels:
                raise ValueError(
                    f"LEDConfig got num_labels={num_labels} and {len(self.id2label)} labels in id2label/label2id: "
                    f"give the labels, or only their number."
                )
            self.num_labels = num_labels
        self.__post_init__()

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

    # ---- transformers' attribute access: aliases, kept keys ----------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Only called for names that are not fields or properties: aliases, then keys kept in ``extra``."""
        if name in ATTRIBUTE_MAP:
            return getattr(self, ATTRIBUTE_MAP[name])
        extra = self.__dict__.get("extra")
        if extra is not None and not name.startswith("__") and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        """Aliases set their field; a name that is neither a field nor a property is kept in ``extra`` (and
        saved), as transformers keeps any attribute set on a config."""
        name = ATTRIBUTE_MAP.get(name, name)
        if name in _FIELD_NAMES or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            self.extra[name] = value

    def has_setting(self, name: str) -> bool:
        """Whether ``name`` is a setting of this config (transformers' ``hasattr(config, name)`` test that decides
        which ``from_pretrained`` keyword arguments override the config)."""
        return name in _FIELD_NAMES or name in ATTRIBUTE_MAP or name in LABEL_PROPERTIES or name in self.extra

    # ---- labels, as transformers derives them ----------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        """Generic labels ``LABEL_0..`` for a new count; the current labels when the count is unchanged."""
        if self.id2label is None or len(self.id2label) != int(value):
            self.id2label = {i: f"LABEL_{i}" for i in range(int(value))}

    @property
    def label2id(self) -> Dict[str, int]:
        return {label: i for i, label in (self.id2label or {}).items()}

    @label2id.setter
    def label2id(self, value: Dict[str, int]) -> None:
        self.id2label = {int(i): str(label) for label, i in value.items()}

    # ---- dict / JSON --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Dict[str, Any], **overrides: Any) -> "LEDConfig":
        """A config from a ``config.json`` dictionary; ``overrides`` change settings as in :meth:`copy`."""
        config = cls(**data)
        return config.copy(**overrides) if overrides else config

    def to_dict(self) -> Dict[str, Any]:
        data = copy.deepcopy(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            data[f.name] = copy.deepcopy(getattr(self, f.name))
        if self.id2label is None:
            data.pop("id2label")
        else:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
            data["label2id"] = self.label2id
        data["model_type"] = "led"
        return data

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], *, revision: Optional[str] = None, **overrides: Any
                        ) -> "LEDConfig":
        """Read ``config.json`` from a checkpoint directory or hub id (``hub.py``; its generation settings:
        ``GenerationConfig``); ``overrides`` change settings as in :meth:`copy`
        (``LEDConfig.from_pretrained(path, num_labels=3)``)."""
        from .hub import CONFIG, resolve_checkpoint

        path = resolve_checkpoint(path, revision=revision, needs=(CONFIG,))
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
        return config.copy(**overrides) if overrides else config

    def save_pretrained(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", "utf-8")

    def copy(self, **changes: Any) -> "LEDConfig":
        """A validated copy with ``changes`` applied as attributes, the way transformers' ``from_pretrained``
        applies its keyword arguments: only settings this config has (see :meth:`has_setting`)."""
        unknown = sorted(k for k in changes if not self.has_setting(k))
        if unknown:
            raise TypeError(
                f"{unknown} {'is not a setting' if len(unknown) == 1 else 'are not settings'} of this LEDConfig: "
                f"settings are its fields ({', '.join(sorted(_FIELD_NAMES - {'extra'}))}), transformers' other "
                f"names for them ({', '.join(ATTRIBUTE_MAP)}), num_labels, label2id, and the keys of its config.json."
            )
        config = copy.deepcopy(self)
        for key, value in changes.items():
            setattr(config, key, value)
        config.__post_init__()
        return config

_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(LEDConfig))
