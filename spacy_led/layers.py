"""Thinc models around the PyTorch LED, registered as spaCy architectures.

The Thinc model holds the task ("generation", "classification" or "question_answering") and the shape of a
fresh LED; the torch module itself is built *late*, once its real shape is known: from a HuggingFace
checkpoint (``load_checkpoint``), from the shape plus the tokenizer's vocabulary (``build_fresh``, for
training from scratch), or from a saved pipeline's ``led_config.json`` before its weights are read
(``build_from_config``). Weights travel as safetensors, never pickles, through Thinc's ``PyTorchShim``.

The Thinc forward pass takes a dict of tensors (the batch the pipe prepared) and returns the torch output
object; training losses are computed inside torch (see the pipes), so no batch x length x vocabulary array
ever crosses into numpy.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Union

from spacy.util import registry
from thinc.api import ArgsKwargs, Model

logger = logging.getLogger("spacy_led")

TASKS = ("generation", "classification", "question_answering")


def _module_class(task: str):
    from .modeling import LEDForConditionalGeneration, LEDForQuestionAnswering, LEDForSequenceClassification

    classes = {
        "generation": LEDForConditionalGeneration,
        "classification": LEDForSequenceClassification,
        "question_answering": LEDForQuestionAnswering,
    }
    if task not in classes:
        raise ValueError(f"unknown LED task {task!r}: use one of {TASKS}.")
    return classes[task]


def serialize_module(module) -> bytes:
    """Weights as safetensors bytes (tied embeddings stored once)."""
    from safetensors.torch import save

    from .modeling.checkpoint import _aliases

    aliases = _aliases(module)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if aliases[k] == k}
    return save(state, metadata={"format": "pt"})


def deserialize_module(module, data: bytes, device) -> Any:
    from safetensors.torch import load

    from .modeling.checkpoint import _aliases

    state = load(data)
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = {name for name, canonical in _aliases(module).items() if canonical != name}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(
            f"stored LED weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}. "
            f"Was the pipeline saved by another version of spacy-led?"
        )
    return module.to(device)


@registry.architectures("spacy_led.LED.v1")
def build_led_model(
    task: str = "generation",
    d_model: int = 256,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    attention_heads: int = 4,
    ffn_dim: int = 1024,
    attention_window: Union[int, List[int]] = 256,
    max_encoder_position_embeddings: int = 4096,
    max_decoder_position_embeddings: int = 512,
    dropout: float = 0.1,
    gradient_checkpointing: bool = False,
    mixed_precision: bool = False,
    dtype: str = "float32",
) -> Model:
    """An LED for ``task``. The shape arguments describe a fresh model trained from scratch; a model loaded
    from a checkpoint (the component's ``checkpoint`` setting) takes the checkpoint's own shape instead.

    ``gradient_checkpointing`` recomputes activations in the backward pass (long documents train in far less
    memory); ``mixed_precision`` runs forward passes under CUDA float16 autocast with a gradient scaler (GPU
    only: Thinc's shim autocasts CUDA alone); ``dtype`` stores the weights in float32, bfloat16 or float16."""
    if task not in TASKS:
        raise ValueError(f"unknown LED task {task!r}: use one of {TASKS}.")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype {dtype!r} is not supported: use float32, bfloat16 (CPU or GPU) or float16 (GPU).")
    shape = dict(
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=attention_heads,
        decoder_attention_heads=attention_heads,
        encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim,
        attention_window=attention_window,
        max_encoder_position_embeddings=max_encoder_position_embeddings,
        max_decoder_position_embeddings=max_decoder_position_embeddings,
        dropout=dropout,
    )
    return Model(
        "led",
        _forward,
        attrs={
            "task": task,
            "shape": shape,
            "gradient_checkpointing": gradient_checkpointing,
            "mixed_precision": mixed_precision,
            "dtype": dtype,
            "led_config": None,
        },
    )


def _forward(model: Model, batch: Dict[str, Any], is_train: bool):
    shim = _shim(model)
    output, backprop = shim(ArgsKwargs(args=(), kwargs=batch), is_train)

    def backprop_loss(d_loss):
        # d_loss: the gradient of the loss (usually 1.0); the torch loss tensor carries the graph.
        import torch

        grad = torch.as_tensor(d_loss, dtype=output.loss.dtype, device=output.loss.device)
        backprop(ArgsKwargs(args=(output.loss,), kwargs={"grad_tensors": grad}))
        return batch

    return output, backprop_loss


def _shim(model: Model):
    if not model.shims:
        raise ValueError(
            "the LED model has no weights yet: give the component a `checkpoint` (a HuggingFace LED "
            "directory), or call nlp.initialize() to create a fresh model for training."
        )
    return model.shims[0]


def has_module(model: Model) -> bool:
    return bool(model.shims)


def get_module(model: Model):
    """The torch LED inside the Thinc model."""
    return _shim(model)._model


def _install(model: Model, module) -> None:
    import torch
    from thinc.api import PyTorchGradScaler, PyTorchShim

    if model.attrs["gradient_checkpointing"]:
        module.gradient_checkpointing_enable()
    dtype = getattr(torch, model.attrs["dtype"])
    if module.dtype != dtype:
        module.to(dtype)
    from thinc.api import get_torch_default_device

    device = get_torch_default_device()
    mixed = bool(model.attrs.get("mixed_precision"))
    if mixed and device.type != "cuda":
        logger.warning("mixed_precision needs a CUDA GPU (spacy.require_gpu()); running in %s on %s. On the CPU, "
                       "use dtype = \"bfloat16\" instead.", model.attrs["dtype"], device)
        mixed = False
    shim = PyTorchShim(
        module,
        mixed_precision=mixed,
        grad_scaler=PyTorchGradScaler(enabled=mixed),
        serialize_model=serialize_module,
        deserialize_model=deserialize_module,
    )
    # A PyTorchShim moves nothing by itself; follow the current Thinc ops (GPU after spacy.require_gpu()).
    module.to(device)
    model.shims[:] = [shim]
    model.attrs["led_config"] = module.config.to_dict()


# What a checkpoint's config.json `architectures` may name for a task, and the weights of the task's own head.
TASK_ARCHITECTURES = {
    "generation": ("LEDForConditionalGeneration", "LEDModel"),
    "classification": ("LEDForSequenceClassification",),
    "question_answering": ("LEDForQuestionAnswering",),
}
TASK_HEAD_PREFIXES = {"classification": "classification_head.", "question_answering": "qa_outputs."}
_TASK_NEEDS = {
    "generation": "an LED trained to generate text (LEDForConditionalGeneration, e.g. allenai/led-base-16384)",
    "classification": "a classification head (classification_head.* weights, LEDForSequenceClassification)",
    "question_answering": "a question-answering head (qa_outputs.* weights, LEDForQuestionAnswering)",
}


def check_checkpoint_task(task: str, path: str, *, component: str, new_head: bool, **config_changes) -> None:
    """Raise ``CheckpointError`` when the checkpoint at ``path`` cannot do ``task``, naming what it holds and
    what the component needs. A checkpoint made for another head never generates text. A classification or
    QA head missing from the checkpoint (or one for another number of labels) is acceptable only with
    ``new_head`` (training creates it); otherwise it would be random. Only ``config.json`` is read, and the
    weights' names (not the weights) when the head matters. A checkpoint that is not a local directory yet
    is left to the loader (which says what is missing)."""
    from .modeling import LEDConfig
    from .modeling.checkpoint import CheckpointError, weight_names

    directory = Path(path).expanduser()
    if not directory.is_dir() or (new_head and task != "generation"):
        return
    config = LEDConfig.from_pretrained(directory)
    architectures = list(config.extra.get("architectures") or [])
    holds = f"holds {'/'.join(architectures) if architectures else 'an LED'}"
    if task == "generation":
        if architectures and not set(architectures) & set(TASK_ARCHITECTURES["generation"]):
            raise CheckpointError(
                f"component '{component}' needs {_TASK_NEEDS[task]}, but checkpoint {path} {holds}, fine-tuned "
                f"for another task: its decoder was not trained to write text. Use a generation checkpoint."
            )
        return
    prefix = TASK_HEAD_PREFIXES[task]
    head = [name for name in weight_names(directory) if name.startswith(prefix)]
    if not head:
        raise CheckpointError(
            f"component '{component}' needs {_TASK_NEEDS[task]} to predict, but checkpoint {path} {holds} "
            f"without one. Train the head first (nlp.initialize() then `spacy train`, which creates it), or "
            f"use a checkpoint fine-tuned for this task."
        )
    wanted = config_changes.get("id2label")
    if task == "classification" and wanted is not None and len(wanted) != config.num_labels:
        raise CheckpointError(
            f"component '{component}' is configured with {len(wanted)} labels {list(wanted.values())}, but the "
            f"classification head of checkpoint {path} has {config.num_labels} "
            f"({list((config.id2label or {}).values())}): leave `labels` out to use the checkpoint's, or train a "
            f"new head for yours (nlp.initialize() then `spacy train`)."
        )


def load_checkpoint(model: Model, path: str, **config_changes) -> None:
    """Build the torch module from a HuggingFace checkpoint directory (its own shape and weights)."""
    cls = _module_class(model.attrs["task"])
    _install(model, cls.from_pretrained(path, **config_changes))


def build_fresh(model: Model, vocab_size: int, special_ids: Dict[str, int], **config_changes) -> None:
    """A randomly initialised LED of the architecture's shape, for training from scratch."""
    from .modeling import LEDConfig

    config = LEDConfig(
        vocab_size=vocab_size,
        pad_token_id=special_ids["pad"],
        bos_token_id=special_ids["bos"],
        eos_token_id=special_ids["eos"],
        decoder_start_token_id=special_ids["eos"],
        **{**model.attrs["shape"], **config_changes},
    )
    _install(model, _module_class(model.attrs["task"])(config))


def generation_settings(model: Model) -> Dict[str, Any]:
    """The generating module's ``generation_config`` as a dict (empty for the other tasks), saved with a pipeline
    so that it generates as the checkpoint it was made from did."""
    generation_config = getattr(get_module(model), "generation_config", None)
    return generation_config.to_dict() if generation_config is not None else {}


def set_generation_settings(model: Model, settings: Dict[str, Any]) -> None:
    from .modeling import GenerationConfig

    module = get_module(model)
    if settings and hasattr(module, "generation_config"):
        module.generation_config = GenerationConfig.from_dict(settings, source="the saved pipeline")


def build_from_config(model: Model, config_dict: Dict[str, Any]) -> None:
    """An uninitialised module of a stored shape, about to receive stored weights (no random init cost)."""
    import torch

    from .modeling import LEDConfig

    cls = _module_class(model.attrs["task"])
    with torch.device("meta"):
        module = cls(LEDConfig.from_dict(config_dict))
    module.to_empty(device=torch.device("cpu"))
    module.tie_weights()
    _install(model, module)
