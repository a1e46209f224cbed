"""HuggingFace checkpoint directories <-> LED state dicts.

A hub id (``allenai/led-base-16384``) is first resolved to a directory of the local HuggingFace cache
(``hub.py``).

Reads ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``) and, for old checkpoints,
``pytorch_model.bin`` (sharded or not) through ``torch.load(weights_only=True)`` only, never full unpickling.
Writes ``config.json`` + ``model.safetensors`` that transformers loads with the same outputs. A generating model
also gets its generation settings: read from ``generation_config.json`` (or, for old checkpoints, from
``config.json``) into ``model.generation_config``, and written back there.

Loading is strict where transformers is lenient in ways that hide mistakes: every model weight must come from
the checkpoint, except a task head the checkpoint does not have (freshly initialised with a warning that
names it, for fine-tuning) and ``final_logits_bias`` (zeros, as in transformers). Weights of another task's
head are skipped with a warning; any other unknown key or a wrong shape is an error naming the key and file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Type, Union

import torch
from torch import nn

from .config import LEDConfig
from .generation_config import GenerationConfig
from .hub import MODEL, resolve_checkpoint

logger = logging.getLogger("spacy_led")

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"

# Parameters that belong to one task head or another: present in a checkpoint of another task, unused here.
HEAD_KEYS = ("lm_head.weight", "final_logits_bias")
HEAD_PREFIXES = ("qa_outputs.", "classification_head.")
# Missing from a checkpoint without harm (transformers' _keys_to_ignore_on_load_missing).
OPTIONAL_KEYS = ("final_logits_bias",)


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded into the requested model."""


def _is_head_key(key: str) -> bool:
    return key in HEAD_KEYS or key.startswith(HEAD_PREFIXES)


def weight_files(path: Path) -> Tuple[str, List[Path]]:
    """The weight files of a checkpoint directory, safetensors preferred."""
    for index_name, kind in ((SAFE_WEIGHTS_INDEX_NAME, "safetensors"), (WEIGHTS_INDEX_NAME, "bin")):
        index_file = path / index_name
        if index_file.is_file():
            try:
                weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise CheckpointError(f"{index_file} is not a valid shard index (no weight_map): {err}") from err
            files = [path / name for name in sorted(set(weight_map.values()))]
            absent = [str(f.name) for f in files if not f.is_file()]
            if absent:
                raise CheckpointError(f"{index_file} lists shards that are missing from {path}: {absent}")
            return kind, files
    if (path / SAFE_WEIGHTS_NAME).is_file():
        return "safetensors", [path / SAFE_WEIGHTS_NAME]
    if (path / WEIGHTS_NAME).is_file():
        return "bin", [path / WEIGHTS_NAME]
    raise FileNotFoundError(
        f"checkpoint directory {path} has no weights: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, "
        f"{WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}. Download the whole model directory (e.g. with "
        f"`hf download allenai/led-base-16384 --local-dir DIR`), or give the hub id itself (allenai/led-base-16384)."
    )


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, on the CPU, in the checkpoint's own dtype."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist or is not a directory.")
    kind, files = weight_files(path)
    state: Dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if kind == "safetensors":
                part = load_file(str(file), device="cpu")
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or foreign files: say which one
            raise CheckpointError(f"could not read weights from {file}: {err}") from err
        if not isinstance(part, dict):
            raise CheckpointError(f"{file} does not hold a state dict (found {type(part).__name__}).")
        state.update(part)
    return state


def _aliases(model: nn.Module) -> Dict[str, str]:
    """Every state-dict name -> the canonical name of the tensor it shares (tied embeddings)."""
    canonical: Dict[int, str] = {}
    names: Dict[str, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        names[name] = canonical.setdefault(id(tensor), name)
    return names


def _match_prefix(state: Dict[str, torch.Tensor], model_keys: Set[str], prefix: str) -> Dict[str, torch.Tensor]:
    """Put checkpoint keys in the model's naming: strip ``led.`` for a bare LEDModel, add it for a head model
    loaded from a bare LEDModel checkpoint."""
    dotted = prefix + "." if prefix else ""
    if dotted and not any(k.startswith(dotted) for k in state):
        return {(k if _is_head_key(k) else dotted + k): v for k, v in state.items()}
    if not dotted and not any(k in model_keys for k in state) and any(k.startswith("led.") for k in state):
        return {(k[4:] if k.startswith("led.") else k): v for k, v in state.items()}
    return state


def load_pretrained(
    cls: Type[nn.Module],
    path: Union[str, Path],
    *,
    revision: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    device: Union[str, torch.device, None] = None,
    config: Optional[LEDConfig] = None,
    **config_changes,
):
    """Build ``cls`` from a checkpoint directory or hub id (see module docstring for what is checked).

    ``config_changes`` override settings of the checkpoint's config as transformers' ``from_pretrained`` keyword
    arguments do (``num_labels=3``, ``dropout=0.2``); ``torch_dtype`` is transformers' older name for
    ``dtype``. A keyword that is no setting of the config is an error, as it is in transformers."""
    path = resolve_checkpoint(path, revision=revision, needs=MODEL)
    if "torch_dtype" in config_changes:
        torch_dtype = config_changes.pop("torch_dtype")
        if dtype is not None and dtype != torch_dtype:
            raise TypeError(f"{cls.__name__}.from_pretrained() got dtype={dtype} and torch_dtype={torch_dtype}: give one.")
        dtype = torch_dtype
    config = config if config is not None else LEDConfig.from_pretrained(path)
    unknown = sorted(k for k in config_changes if not config.has_setting(k))
    if unknown:
        raise TypeError(
            f"{cls.__name__}.from_pretrained() got unexpected keyword argument(s) {unknown}: they are neither "
            f"loading options (dtype, device, config) nor settings of the checkpoint's LEDConfig (its fields, "
            f"transformers' aliases such as hidden_size, num_labels, label2id, or keys of its config.json)."
        )
    if config_changes:
        config = config.copy(**config_changes)
    state = read_state_dict(path)

    with torch.device("meta"):
        model = cls(config)
    aliases = _aliases(model)
    state = _match_prefix(state, set(aliases), getattr(cls, "base_model_prefix", ""))

    canonical_state: Dict[str, torch.Tensor] = {}
    unused_heads: List[str] = []
    unknown: List[str] = []
    for key, tensor in state.items():
        if key in aliases:
            target = aliases[key]
            if target == key or target not in canonical_state and target not in state:
                canonical_state[target] = tensor
        elif _is_head_key(key):
            unused_heads.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"checkpoint {path} holds weights that {cls.__name__} does not have: {sorted(unknown)[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}. Is config.json from the same model as the weights?"
        )
    required = set(aliases.values())
    missing = sorted(required - set(canonical_state))
    fresh = [k for k in missing if k.startswith(tuple(getattr(cls, "head_prefixes", ())))]
    hard_missing = [k for k in missing if k not in fresh and k not in OPTIONAL_KEYS]
    if hard_missing:
        raise CheckpointError(
            f"checkpoint {path} lacks weights of {cls.__name__}: {hard_missing[:10]}"
            f"{' ...' if len(hard_missing) > 10 else ''}. The checkpoint is incomplete or of another architecture."
        )
    expected_shapes = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    resized = [k for k in list(canonical_state) if k.startswith(tuple(getattr(cls, "head_prefixes", ())))
               and tuple(canonical_state[k].shape) != expected_shapes[k]]
    for key in resized:  # a head for another label set (num_labels changed): trained anew, as fine-tuning does
        logger.warning("%s: checkpoint weight %s has shape %s, the model needs %s (another label set); it is "
                       "freshly initialised.", cls.__name__, key, tuple(canonical_state[key].shape), expected_shapes[key])
        del canonical_state[key]
        fresh.append(key)
        missing.append(key)
    for key, tensor in canonical_state.items():
        if tuple(tensor.shape) != expected_shapes[key]:
            raise CheckpointError(
                f"weight {key} in {path} has shape {tuple(tensor.shape)} but the model built from its "
                f"config.json expects {expected_shapes[key]}: config and weights do not match."
            )

    model.to_empty(device=torch.device(device) if device is not None else torch.device("cpu"))
    model.tie_weights()
    if dtype is not None:
        model.to(dtype)
    with torch.no_grad():
        model.load_state_dict(canonical_state, strict=False)
        for key in missing:
            if key in OPTIONAL_KEYS:
                model.get_buffer(key).zero_() if key in dict(model.named_buffers()) else model.get_parameter(key).zero_()
        for prefix in sorted({k.split(".")[0] for k in fresh}):
            getattr(model, prefix).apply(model._init_weights)
    if fresh:
        logger.warning(
            "%s: weights %s are not in checkpoint %s and were freshly initialised; train the model on your "
            "task before using its predictions.", cls.__name__, fresh, path,
        )
    if unused_heads:
        logger.info("%s: checkpoint weights %s belong to another task head and are not used.", cls.__name__, unused_heads)
    if hasattr(model, "generation_config"):
        # Built from config.json's settings (old checkpoints); generation_config.json replaces them.
        model.generation_config = GenerationConfig.from_pretrained(path) or model.generation_config
    model.eval()
    return model


def save_pretrained(model: nn.Module, path: Union[str, Path]) -> None:
    """Write ``config.json``, ``model.safetensors`` (tied copies stored once, as transformers 5 does) and, for a
    generating model, ``generation_config.json``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config: LEDConfig = model.config
    config = config.copy()
    config.extra["architectures"] = [type(model).__name__]
    dtype_name = str(next(model.parameters()).dtype).replace("torch.", "")
    for key in ("dtype", "torch_dtype"):
        if key in config.extra:
            config.extra[key] = dtype_name
    config.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    aliases = _aliases(model)
    state = model.state_dict()
    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in state.items()
        if aliases[name] == name
    }
    save_file(tensors, str(path / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})


def weight_names(path: Union[str, Path]) -> Set[str]:
    """The tensor names a checkpoint directory holds, to tell what it contains before loading it: read from the
    safetensors headers; ``pytorch_model.bin`` files are memory-mapped where their format allows."""
    from safetensors import safe_open

    path = Path(path)
    kind, files = weight_files(path)
    names: Set[str] = set()
    for file in files:
        try:
            if kind == "safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    names.update(handle.keys())
            else:
                try:
                    names.update(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
                except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
                    names.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as err:  # corrupt or foreign files: say which one
            raise CheckpointError(f"could not read weights from {file}: {err}") from err
    return names
