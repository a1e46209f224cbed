"""The pipeline a run uses: loaded from a saved pipeline, a package or a checkpoint (directory or hub id) + task,
with the run's overrides of the LED components' settings. Called by the driver and again by every worker process."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List

from .options import TASKS, ApplyOptions, UsageError


def import_code(path: str) -> None:
    """Import a Python file that registers custom components (spaCy's ``--code``), so pipelines using them load."""
    from spacy.util import import_file

    if not Path(path).is_file():
        raise UsageError(f"--code {path!r} is not a file.")
    import_file("spacy_led_user_code", path)


def load_pipeline(options: ApplyOptions, gpu_id: int = None):
    """A saved pipeline / installed package, or spacy.blank("en") + the task's component on a HuggingFace LED
    checkpoint (a directory, or a hub id fetched into the HuggingFace cache), configured by ``options``.
    ``gpu_id`` overrides ``options.gpu_id`` (a Ray worker uses the GPU Ray gives it)."""
    import spacy

    gpu = options.gpu_id if gpu_id is None else gpu_id
    if gpu >= 0:
        require_gpu(gpu)
    if options.code:
        import_code(options.code)
    if options.checkpoint:
        if options.task not in TASKS:
            raise UsageError(f"--checkpoint needs --task, one of {', '.join(TASKS)}.")
        from ..modeling.hub import resolve_checkpoint

        try:  # here, so that a missing checkpoint is a usage error before any output is written
            directory = resolve_checkpoint(options.checkpoint, revision=options.revision)
        except (FileNotFoundError, ImportError, ValueError) as err:
            raise UsageError(str(err)) from err
        if not directory.is_dir():
            raise UsageError(f"checkpoint {options.checkpoint!r} is neither a directory (a HuggingFace LED "
                             f"download) nor a hub id (org/name).")
        nlp = spacy.blank("en")
        nlp.add_pipe(TASKS[options.task], config={"checkpoint": str(options.checkpoint), "revision": options.revision,
                                                  **options.component_config})
    else:
        if not options.model:
            raise UsageError("give MODEL (a pipeline directory or package) or --checkpoint DIR --task TASK.")
        try:
            nlp = spacy.load(options.model)
        except OSError as err:
            raise UsageError(f"cannot load pipeline {options.model!r}: {err}") from err
    configure(nlp, options)
    return nlp


def require_gpu(gpu_id: int) -> None:
    import spacy

    try:
        import torch

        has_cuda = torch.cuda.is_available()
        count = torch.cuda.device_count() if has_cuda else 0
    except Exception:  # noqa: BLE001
        has_cuda, count = False, 0
    if not has_cuda:
        raise UsageError(f"--gpu-id {gpu_id}: no CUDA GPU is visible to torch on this machine "
                         f"(torch.cuda.is_available() is False); leave --gpu-id out to run on the CPU.")
    if gpu_id >= count:
        raise UsageError(f"--gpu-id {gpu_id}: only {count} GPU(s) visible (ids 0..{count - 1}).")
    try:
        spacy.require_gpu(gpu_id)
    except Exception as err:  # noqa: BLE001
        raise UsageError(f"--gpu-id {gpu_id}: spacy.require_gpu failed: {err}") from err


def led_pipes(nlp) -> List[Any]:
    from ..pipes.base import LEDPipe

    return [pipe for _, pipe in nlp.pipeline if isinstance(pipe, LEDPipe)]


def configure(nlp, options: ApplyOptions) -> None:
    """The run's overrides of the LED components' batch token budget, overflow handling, input limit and
    quantization."""
    for pipe in led_pipes(nlp):
        if options.batch_token_budget is not None:
            pipe.cfg["batch_token_budget"] = int(options.batch_token_budget)
        if options.overflow is not None:
            pipe.cfg["overflow"] = options.overflow
        if options.max_length is not None:
            pipe.cfg["max_length"] = int(options.max_length)
        if options.quantize is not None:
            if pipe.cfg.get("runtime", "torch") != "torch":
                raise UsageError(f"--quantize {options.quantize} applies to the torch runtime; component "
                                 f"'{pipe.name}' runs on {pipe.cfg['runtime']}.")
            pipe.cfg["quantize"] = options.quantize
