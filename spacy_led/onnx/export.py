"""``export_onnx``: an LED checkpoint or the LED components of a spaCy pipeline as ONNX graphs.

An export directory holds the graphs of one model (``graphs.py`` says what each computes), its
``config.json`` and ``generation_config.json``, and ``onnx_export.json``: the task, the graph files, the opset
and a fingerprint of the weights, which the runtime compares with the model a component has loaded so that a
stale or foreign export is refused instead of giving other numbers.

Export path: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset 17. The graphs
are traced on a small example and stay valid for every batch size, input length (up to the position table),
number of global tokens, number of beams and decoder length because every size in them is read from the
inputs' shapes and values inside the graph (``attention.py``); the tests run them at other shapes than the
example's. The dynamo exporter (``torch.export``) produces equivalent graphs but took ~30 s of CPU per graph
for a two-layer model here, against ~2 s for tracing, and would add onnxscript as a dependency.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Union

import torch

from .graphs import DecoderInitGraph, DecoderStepGraph, EncoderGraph, HeadGraph

logger = logging.getLogger("spacy_led")

OPSET = 17
MANIFEST = "onnx_export.json"
FORMAT_VERSION = 1
ENCODER_INPUTS = ["input_ids", "attention_mask", "global_attention_mask"]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every parameter's name, shape and a strided sample of its values: tells checkpoints apart
    (fine-tuned or not) in milliseconds, without hashing every byte of a large model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1).float().cpu()
        sample = flat[:: max(1, flat.numel() // 4096)]
        digest.update(f"{name}:{tuple(tensor.shape)}:".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def cache_names(num_layers: int, prefix: str) -> List[str]:
    """``{prefix}.{i}.key`` / ``.value`` for every decoder layer, in the graphs' order."""
    return [f"{prefix}.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def _task_of(module) -> str:
    from ..modeling import LEDForConditionalGeneration, LEDForQuestionAnswering, LEDForSequenceClassification

    for cls, task in ((LEDForConditionalGeneration, "generation"), (LEDForSequenceClassification, "classification"),
                      (LEDForQuestionAnswering, "question_answering")):
        if isinstance(module, cls):
            return task
    raise TypeError(f"cannot export {type(module).__name__}: give an LEDForConditionalGeneration, "
                    f"LEDForSequenceClassification or LEDForQuestionAnswering.")


def _export(graph: torch.nn.Module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    # The exporter puts the graph back into the mode it found it in, recursively: in eval mode, so that the
    # model's modules inside it are left in eval mode too.
    graph.eval()
    with warnings.catch_warnings():
        # The tracer warns at every size it reads; each is recorded as a shape operation in the graph, and
        # the tests run the graphs at other shapes than the example's.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)


def _example_inputs(config, batch: int = 2, length: int = 0):
    """Ids and masks that exercise every part of the graphs: padding, two global tokens, and a length that is
    no window multiple and exceeds three windows (so no size of the example coincides with a constant)."""
    window = max(config.attention_window) if isinstance(config.attention_window, list) else config.attention_window
    length = length or min(config.max_encoder_position_embeddings, 3 * window // 2 + 5)
    ids = torch.full((batch, length), 5 % config.vocab_size, dtype=torch.long)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3 :] = 0
    glob = torch.zeros(batch, length, dtype=torch.long)
    glob[:, 0] = 1
    glob[0, 2] = 1
    return ids, mask, glob


def export_module(module, out_dir: Union[str, Path]) -> Path:
    """Write the graphs of a loaded LED model (``LEDForConditionalGeneration``, ``LEDForSequenceClassification``
    or ``LEDForQuestionAnswering``) and its manifest to ``out_dir``."""
    was_training = module.training
    try:
        return _export_module(module.eval(), Path(out_dir))
    finally:
        module.train(was_training)


def _export_module(module, out: Path) -> Path:
    task = _task_of(module)
    out.mkdir(parents=True, exist_ok=True)
    dtype = next(module.parameters()).dtype
    if dtype != torch.float32:
        raise ValueError(f"export a float32 model (this one is {dtype}): module.float() first.")
    config = module.config
    ids, mask, glob = _example_inputs(config)
    batch_length = {0: "batch", 1: "length"}
    files: Dict[str, str] = {}
    with torch.no_grad():
        encoder = EncoderGraph(module.led)
        _export(encoder, (ids, mask, glob), out / "encoder.onnx", ENCODER_INPUTS, ["encoder_hidden_states"],
                {name: batch_length for name in [*ENCODER_INPUTS, "encoder_hidden_states"]})
        files["encoder"] = "encoder.onnx"
        states = encoder(ids, mask, glob)
        if task == "generation":
            files.update(_export_decoder(module, states, mask, out))
        else:
            head = module.qa_outputs if task == "question_answering" else module.classification_head
            decoder_ids = ids[:, None, :7]  # (B, S=1, T)
            _export(HeadGraph(module, head), (states, mask, decoder_ids), out / "head.onnx",
                    ["encoder_hidden_states", "attention_mask", "decoder_input_ids"], ["logits"],
                    {"encoder_hidden_states": batch_length, "attention_mask": batch_length,
                     "decoder_input_ids": {0: "batch", 1: "segments", 2: "decoder_length"},
                     "logits": {0: "batch", 1: "segments", 2: "decoder_length"}})
            files["head"] = "head.onnx"
    config.save_pretrained(out)
    if task == "generation":
        module.generation_config.save_pretrained(out)
    manifest = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "files": files,
        "opset": OPSET,
        "decoder_layers": config.decoder_layers,
        "weights_fingerprint": weights_fingerprint(module),
        "torch_version": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf8")
    return out


def _export_decoder(module, states, mask, out: Path) -> Dict[str, str]:
    layers = module.config.decoder_layers
    group = 3
    start = torch.full((states.shape[0], group), module.config.decoder_start_token_id, dtype=torch.long)
    present, cross = cache_names(layers, "present"), cache_names(layers, "cross")
    rows = {0: "batch", 1: "group"}
    enc = {0: "batch", 1: "length"}
    cache_axes = {**{name: {0: "batch", 1: "group", 3: "past_length"} for name in present},
                  **{name: {0: "batch", 2: "length"} for name in cross}}
    init = DecoderInitGraph(module)
    _export(init, (states, mask, start), out / "decoder_init.onnx",
            ["encoder_hidden_states", "attention_mask", "decoder_input_ids"], ["logits", *present, *cross],
            {"encoder_hidden_states": enc, "attention_mask": enc, "decoder_input_ids": rows, "logits": rows,
             **cache_axes})
    first = init(states, mask, start)
    # Step from a two-token cache, so that the past length differs from every other size of the example.
    step = DecoderStepGraph(module)
    caches = list(step(start, mask, *first[1:]))[1:] + list(first[1 + 2 * layers :])
    past = cache_names(layers, "past")
    _export(step, (start, mask, *caches), out / "decoder_step.onnx",
            ["decoder_input_ids", "attention_mask", *past, *cross], ["logits", *present],
            {"decoder_input_ids": rows, "attention_mask": enc, "logits": rows, **cache_axes,
             **{name: {0: "batch", 1: "group", 3: "past_length"} for name in past}})
    return {"decoder_init": "decoder_init.onnx", "decoder_step": "decoder_step.onnx"}


def export_onnx(source: Union[str, Path], out_dir: Union[str, Path]) -> List[Path]:
    """Export ``source`` to ONNX under ``out_dir``; returns the export directories written.

    ``source``: a HuggingFace LED checkpoint (directory or hub id; its task from the head its weights hold)
    written to ``out_dir`` itself, or a spaCy pipeline directory, each of whose LED components is written to
    ``out_dir/<component name>`` (give that directory to the component's ``onnx_path``)."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "meta.json").is_file() and (path / "config.cfg").is_file():
        return _export_pipeline(path, Path(out_dir))
    from ..modeling.hub import resolve_checkpoint

    checkpoint = Path(resolve_checkpoint(str(source)))
    module = _load_checkpoint(checkpoint)
    written = export_module(module, out_dir)
    _copy_tokenizer(checkpoint, written)
    return [written]


def _load_checkpoint(checkpoint: Path):
    from ..layers import TASK_HEAD_PREFIXES, _module_class
    from ..modeling.checkpoint import weight_names

    names = weight_names(checkpoint)
    task = next((task for task, prefix in TASK_HEAD_PREFIXES.items() if any(n.startswith(prefix) for n in names)),
                "generation")
    return _module_class(task).from_pretrained(checkpoint)


def _copy_tokenizer(checkpoint: Path, out: Path) -> None:
    """The checkpoint's tokenizer beside the graphs, so that an export directory is usable on its own."""
    from ..tokenizer import LEDTokenizer

    try:
        tokenizer = LEDTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as err:
        logger.warning("no tokenizer written with the ONNX export (%s)", err)
        return
    tokenizer.save_pretrained(out)


def _export_pipeline(path: Path, out_dir: Path) -> List[Path]:
    import spacy

    from ..pipes.base import LEDPipe

    nlp = spacy.load(path)
    written = []
    for name, pipe in nlp.pipeline:
        if isinstance(pipe, LEDPipe):
            pipe.load()
            target = export_module(pipe.module, out_dir / name)
            pipe.tokenizer.save_pretrained(target)
            written.append(target)
    if not written:
        raise ValueError(f"pipeline {path} has no LED component (led_summarizer, led_classifier, led_qa) to export.")
    return written
