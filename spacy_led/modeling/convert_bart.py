"""An LED checkpoint made from a BART checkpoint, the way the released LED checkpoints were made.

Beltagy et al. (2020) built LED from BART: every encoder self-attention becomes Longformer's (sliding window +
global tokens) with the global query/key/value projections starting as copies of the local ones, and the
encoder's learned position table is extended to the long input by repeating BART's 1,024 rows; the decoder is
BART's, unchanged. On inputs no longer than half the window (each token then sees every other token) the result
computes exactly what BART computes, with or without global tokens; positions past BART's table are untrained
copies, which is why the LED paper fine-tuned on long documents next.

transformers' BART tables carry 2 leading rows LED does not have (BART reads row ``i + 2`` for position ``i``),
so LED row ``i`` is BART row ``i % 1024 + 2`` in the encoder and BART row ``i + 2`` in the decoder.

A BART setting LED cannot represent (``scale_embedding``, pre-LayerNorm or final-LayerNorm variants, untied
output embeddings, ...) is an error before anything is written: the conversion never changes the numbers silently.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .checkpoint import _aliases, read_state_dict
from .config import LEDConfig
from .generation_config import SUPPORTED, UNSUPPORTED_NO_OP_VALUES, GenerationConfig
from .hub import EVERYTHING, resolve_checkpoint
from .model import LEDForConditionalGeneration

# BART config options (some only in old transformers or fairseq-derived configs) that change the computation,
# with the one value LED computes. Any other value cannot become an LED with the same numbers.
REQUIRED_BART_OPTIONS = {
    "scale_embedding": False,  # token embeddings times sqrt(d_model): LED never scales them
    "normalize_before": False,  # pre-LayerNorm layers (mBART-style)
    "add_final_layer_norm": False,  # a LayerNorm after each stack (mBART-style)
    "normalize_embedding": True,  # the LayerNorm after the embeddings, which LED always has
    "static_position_embeddings": False,  # sinusoidal positions instead of learned ones
    "add_bias_logits": False,  # a second logits bias
    "extra_pos_embeddings": 2,  # the position offset: the 2 leading rows dropped below
    "is_decoder": False,  # a decoder-only (BartForCausalLM) checkpoint
}
# BART config keys with no meaning in LED's config.json (replaced by the LED fields set below).
DROPPED_BART_KEYS = ("model_type", "max_position_embeddings", "architectures", "transformers_version",
                     "_name_or_path", "output_past", "gradient_checkpointing", "force_bos_token_to_be_generated")
BART_POSITION_OFFSET = 2

_ENCODER_ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj",
                      "query_global": "q_proj", "key_global": "k_proj", "value_global": "v_proj", "output": "out_proj"}


_LED_ENCODER_ATTENTION = re.compile(
    r"^led\.encoder\.layers\.(\d+)\.self_attn\.(?:longformer_self_attn\.)?(\w+)\.(weight|bias)$"
)


class ConversionError(ValueError):
    """A BART checkpoint that cannot become an LED computing the same numbers."""


def convert_bart_to_led(
    source: Union[str, Path],
    dest: Union[str, Path],
    *,
    max_positions: int = 16384,
    attention_window: int = 1024,
    revision: Optional[str] = None,
) -> Path:
    """Write an LED checkpoint directory ``dest`` (config, safetensors weights, tokenizer files, generation
    settings) made from the BART seq2seq checkpoint ``source`` (a directory or hub id, e.g.
    ``facebook/bart-large-cnn``), with ``max_positions`` encoder positions and a two-sided ``attention_window``
    in every encoder layer. spacy-led and transformers both load ``dest``. Returns ``dest``."""
    dest = Path(dest).expanduser()
    _check_options(max_positions, attention_window, dest)
    src = resolve_checkpoint(source, revision=revision, needs=EVERYTHING)
    bart = _read_bart_config(src)
    config, generation = led_config_from_bart(bart, max_positions=max_positions, attention_window=attention_window)
    generation = GenerationConfig.from_pretrained(src) or generation  # generation_config.json wins, as in transformers
    from ..tokenizer import LEDTokenizer

    tokenizer = LEDTokenizer.from_pretrained(src, model_max_length=max_positions)
    model = _build_led(config, _led_state_from_bart(read_state_dict(src), bart, config, src))
    model.generation_config = generation

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:  # written beside dest and moved into place: an interrupted conversion leaves no half checkpoint
        model.save_pretrained(partial)  # config.json, model.safetensors, generation_config.json
        tokenizer.save_pretrained(partial)
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest


def led_config_from_bart(bart: Dict[str, Any], *, max_positions: int, attention_window: int
                         ) -> Tuple[LEDConfig, GenerationConfig]:
    """The LED config of a BART ``config.json`` dict, and the generation settings that config.json carries (old
    checkpoints keep them there); they move to generation_config.json."""
    model_type = bart.get("model_type")
    if model_type != "bart":
        raise ConversionError(
            f"the source checkpoint has model_type {model_type!r}; convert-bart converts BART checkpoints "
            f"(model_type 'bart', e.g. facebook/bart-large-cnn). "
            + ("It is already an LED checkpoint: use it as it is." if model_type == "led" else "")
        )
    for option, required in REQUIRED_BART_OPTIONS.items():
        if option in bart and bart[option] != required:
            raise ConversionError(
                f"the BART checkpoint sets {option}={bart[option]!r}; LED has no counterpart for it (it computes "
                f"{option}={required!r}), so the converted model would not compute what the BART model does."
            )
    if "max_position_embeddings" not in bart:
        raise ConversionError("the BART config.json has no max_position_embeddings (the size of its position tables).")
    data = {k: v for k, v in bart.items() if k not in DROPPED_BART_KEYS and k not in REQUIRED_BART_OPTIONS}
    if bart.get("force_bos_token_to_be_generated") and data.get("forced_bos_token_id") is None:
        data["forced_bos_token_id"] = bart.get("bos_token_id", 0)  # the old name of the same setting
    data.update(
        max_encoder_position_embeddings=max_positions,
        max_decoder_position_embeddings=bart["max_position_embeddings"],
        attention_window=attention_window,
        architectures=["LEDForConditionalGeneration"],
    )
    try:
        config = LEDConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"the BART config.json cannot describe an LED: {err}") from err
    generation = GenerationConfig.from_model_config(config)
    for key in list(config.extra):  # generation settings live in generation_config.json (token ids stay)
        if key in SUPPORTED or key in UNSUPPORTED_NO_OP_VALUES:
            del config.extra[key]
    return config, generation


def _check_options(max_positions: int, attention_window: int, dest: Path) -> None:
    if attention_window < 2 or attention_window % 2:
        raise ConversionError(
            f"attention_window must be a positive even number (the two-sided window); got {attention_window}."
        )
    if max_positions < attention_window or max_positions % attention_window:
        raise ConversionError(
            f"max_positions ({max_positions}) must be a multiple of attention_window ({attention_window}): "
            f"transformers pads every input to a multiple of the window before reading the position table."
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConversionError(f"destination {dest} already exists and is not an empty directory: choose a new one.")


def _read_bart_config(src: Path) -> Dict[str, Any]:
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{src} has no config.json: it is not a HuggingFace BART checkpoint directory.")
    return json.loads(config_file.read_text(encoding="utf-8"))


def _bart_name(led_name: str) -> str:
    """The BART weight an LED weight is made from (position tables: before dropping BART's offset rows)."""
    attention = _LED_ENCODER_ATTENTION.match(led_name)
    if attention:
        layer, projection, kind = attention.groups()
        return f"model.encoder.layers.{layer}.self_attn.{_ENCODER_ATTENTION[projection]}.{kind}"
    return "model." + led_name[len("led."):] if led_name.startswith("led.") else led_name


def _led_state_from_bart(state: Dict[str, torch.Tensor], bart: Dict[str, Any], config: LEDConfig, src: Path
                         ) -> Dict[str, torch.Tensor]:
    """LED weights (canonical names of LEDForConditionalGeneration) from BART's, every one checked."""
    if not any(k.startswith("model.") for k in state):  # a bare BartModel checkpoint
        state = {(k if k == "final_logits_bias" else "model." + k): v for k, v in state.items()}
    used = set()

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise ConversionError(
                f"the BART checkpoint {src} lacks weight {name}: it is incomplete, or not a "
                f"BartForConditionalGeneration / BartModel checkpoint."
            )
        used.add(name)
        return state[name]

    shared = take("model.shared.weight")
    for copy in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
        if copy in state:
            used.add(copy)
            if not torch.equal(state[copy], shared):
                raise ConversionError(
                    f"{copy} in {src} differs from model.shared.weight: LED shares one token embedding between "
                    f"the encoder, the decoder and the output layer, so untied embeddings cannot be converted."
                )

    with torch.device("meta"):
        reference = LEDForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    bart_positions = bart["max_position_embeddings"]
    led: Dict[str, torch.Tensor] = {}
    for name in sorted(set(_aliases(reference).values())):
        if name == "final_logits_bias" and name not in state:
            led[name] = torch.zeros(expected[name], dtype=shared.dtype)  # as transformers: no bias is a zero bias
            continue
        source_name = _bart_name(name)
        tensor = take(source_name)
        is_positions = name.endswith("embed_positions.weight")
        shape = (bart_positions + BART_POSITION_OFFSET, config.d_model) if is_positions else expected[name]
        if tuple(tensor.shape) != shape:
            raise ConversionError(
                f"weight {source_name} in {src} has shape {tuple(tensor.shape)}, but its config.json implies "
                f"{shape}{' (max_position_embeddings + 2 offset rows, d_model)' if is_positions else ''}: "
                f"config and weights do not match."
            )
        if is_positions:
            tensor = tensor[BART_POSITION_OFFSET:]
            if ".encoder." in name:  # BART's table again and again, up to max_positions
                repeats = math.ceil(config.max_encoder_position_embeddings / bart_positions)
                tensor = tensor.repeat(repeats, 1)[: config.max_encoder_position_embeddings]
        led[name] = tensor.contiguous()
    unused = sorted(set(state) - used)
    if unused:
        raise ConversionError(
            f"the BART checkpoint {src} holds weights LED has no place for: {unused[:10]}"
            f"{' ...' if len(unused) > 10 else ''} (a task head other than generation, or a BART variant "
            f"such as mBART's final LayerNorms)."
        )
    return led


def _build_led(config: LEDConfig, state: Dict[str, torch.Tensor]) -> LEDForConditionalGeneration:
    with torch.device("meta"):
        model = LEDForConditionalGeneration(config)
    model.to_empty(device=torch.device("cpu"))
    model.to(state["led.shared.weight"].dtype)
    model.tie_weights()
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    aliases = _aliases(model)
    assert not unexpected and all(aliases[k] != k for k in missing), (missing, unexpected)
    return model.eval()
