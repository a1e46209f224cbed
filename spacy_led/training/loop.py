"""What every Ray Train worker runs: plain PyTorch fine-tuning of one LED component under DDP.

The batches are the component's own: each worker reads the training corpus with the configured reader, and
the component turns its Examples into tensors (``LEDPipe.training_batch``), with the global attention,
windows and gold targets it uses in ``spacy train``. Only the optimisation is done here, in torch: AdamW,
warm-up + linear decay, gradient clipping, gradient accumulation and checkpointing.

**N workers give the result of one.** A step's global batch is the same ``batch_size`` examples whatever the
number of workers: a ``DistributedSampler`` seeded with the run's seed permutes the examples identically on
every worker and deals consecutive examples to consecutive ranks, so the union of the workers' micro-batches
of step *s* is the block *s* of that permutation. The loss of a micro-batch is the model's mean loss times its
share of the step's loss units (target tokens for summaries, inputs otherwise), counted over all workers and
micro-batches, times the world size (DDP averages gradients over workers): the gradient is that of the mean loss
over the whole global batch, as one worker computing it in one pass would get. Dropout is reseeded from (seed,
step, rank) at every step, so a resumed run draws the masks an uninterrupted one does.

**A failed worker costs at most ``checkpoint_every`` steps.** Rank 0 reports a Ray Train checkpoint every
``checkpoint_every`` steps: a HuggingFace checkpoint directory (the components load it) plus the optimizer and
schedule state. Ray Train restarts the worker group after a failure and ``ray.train.get_checkpoint()`` returns
the last one; training goes on at the step after it, skipping the micro-batches already seen in that epoch.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import TrainingConfig, TrainingConfigError

logger = logging.getLogger("spacy_led")

TRAINING_STATE = "training_state.pt"  # optimizer + schedule (torch.save of tensors and numbers only)
TRAINER_STATE = "trainer_state.json"  # the step a checkpoint was taken after
ARCHITECTURE_TASKS = {"summarize": "generation", "classify": "classification", "qa": "question_answering"}


# ---- the component, shared by the driver and the workers ------------------------------------------------
def build_pipeline(config: TrainingConfig, checkpoint: Optional[str]):
    """``spacy.blank(lang)`` with the task's component, on ``checkpoint`` (None: a fresh LED of the shape)."""
    import spacy

    nlp = spacy.blank(config.lang)
    settings: Dict[str, Any] = {**config.component, "checkpoint": checkpoint}
    if checkpoint is None:
        settings["model"] = {"@architectures": "spacy_led.LED.v1", "task": ARCHITECTURE_TASKS[config.task],
                             **config.shape}
    nlp.add_pipe(config.component_name, config=settings)
    return nlp


def training_examples(config: TrainingConfig, nlp) -> List[Any]:
    """The corpus' Examples that give the component something to learn (a gold summary, labels, a question)."""
    from spacy.util import registry

    reader = registry.resolve({"reader": config.train_corpus})["reader"]
    pipe = nlp.get_pipe(config.component_name)
    examples, skipped = [], 0
    for example in reader(nlp):
        if pipe.training_batch([example]) is None:
            skipped += 1
        else:
            examples.append(example)
    if skipped:
        logger.warning("%d training example(s) have no gold %s annotation and are skipped.", skipped, config.task)
    return examples


@dataclass(frozen=True)
class StepPlan:
    """How the examples divide into optimizer steps; the incomplete last global batch of an epoch is dropped,
    so every step has exactly ``batch_size`` examples on any number of workers."""

    examples: int
    batch_size: int
    epochs: int
    max_steps: int

    @property
    def steps_per_epoch(self) -> int:
        return self.examples // self.batch_size

    @property
    def total_steps(self) -> int:
        planned = self.steps_per_epoch * self.epochs
        return min(planned, self.max_steps) if self.max_steps else planned

    @classmethod
    def of(cls, config: TrainingConfig, examples: int) -> "StepPlan":
        plan = cls(examples, config.batch_size, config.epochs, config.max_steps)
        if plan.steps_per_epoch == 0:
            raise TrainingConfigError(
                f"the training corpus has {examples} usable example(s), fewer than training.batch_size "
                f"{config.batch_size}: lower the batch size or add data."
            )
        if config.max_steps and config.max_steps > plan.steps_per_epoch * config.epochs:
            plan = cls(examples, config.batch_size, -(-config.max_steps // plan.steps_per_epoch), config.max_steps)
        return plan


def loss_units(task: str, batch: Dict[str, Any]) -> int:
    """What the model's loss is a mean over: target tokens for summaries, inputs (rows) for labels and spans."""
    if task == "summarize":
        return int((batch["labels"] != -100).sum())
    return int(batch["input_ids"].shape[0])


# ---- optimizer, schedule, checkpoints -------------------------------------------------------------------
def make_optimizer(module, config: TrainingConfig):
    """AdamW with transformers' Trainer convention: no weight decay on biases and LayerNorm weights."""
    import torch

    decay, no_decay = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm = "layer_norm" in name or "layernorm" in name
        (no_decay if name.endswith(".bias") or is_norm else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)


def make_schedule(optimizer, config: TrainingConfig, total_steps: int):
    """Linear warm-up over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""
    import torch

    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_training_checkpoint(directory: Path, pipe, optimizer, schedule, step: int) -> None:
    """A HuggingFace LED directory (config, safetensors, tokenizer) plus what resuming needs."""
    import torch

    pipe.module.save_pretrained(directory)
    pipe.tokenizer.save_pretrained(directory)
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, directory / TRAINING_STATE)
    (directory / TRAINER_STATE).write_text(json.dumps({"step": step}))


def restore_training_checkpoint(directory: Path, pipe, optimizer, schedule) -> int:
    """Weights, optimizer and schedule from a checkpoint of this run; returns the step it was taken after."""
    import torch

    from ..layers import deserialize_module
    from ..modeling.checkpoint import SAFE_WEIGHTS_NAME

    module = pipe.module
    deserialize_module(module, (directory / SAFE_WEIGHTS_NAME).read_bytes(), module.device)
    state = torch.load(directory / TRAINING_STATE, map_location=module.device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    return int(json.loads((directory / TRAINER_STATE).read_text())["step"])


# ---- the loop -------------------------------------------------------------------------------------------
def train_loop_per_worker(loop_config: Dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop_config`` holds the run's config (as a dict), the start
    checkpoint the driver prepared, and optionally ``kill_at_step`` (a test hook: rank 1 kills its own
    process after that step, once, in a run that did not resume)."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    config = TrainingConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed)

    nlp = build_pipeline(config, loop_config["start_checkpoint"])
    pipe = nlp.get_pipe(config.component_name)
    examples = training_examples(config, nlp)
    plan = StepPlan.of(config, len(examples))

    module = pipe.module
    if config.gradient_checkpointing:
        module.gradient_checkpointing_enable()
    model = ray.train.torch.prepare_model(
        module, parallel_strategy_kwargs={"find_unused_parameters": config.find_unused_parameters}
    )
    optimizer = make_optimizer(module, config)
    schedule = make_schedule(optimizer, config, plan.total_steps)

    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            step = restore_training_checkpoint(Path(directory), pipe, optimizer, schedule)
        logger.info("worker %d resumes after step %d", rank, step)
    resumed_from = step

    # Batches are lists of Examples; the component makes tensors on the module's device from them, so the
    # loader has nothing to move and Ray's prepare_data_loader is not needed. The sampler is built here, seeded
    # with the run's seed, so that 1 and N workers draw the same global batches.
    sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(examples, batch_size=config.micro_batch_size(world), sampler=sampler, collate_fn=list)
    accumulation = config.accumulation_steps
    device = module.device
    module.train()
    started = time.perf_counter()

    while step < plan.total_steps:
        epoch = step // plan.steps_per_epoch
        sampler.set_epoch(epoch)
        micro_batches = iter(loader)
        for _ in range((step - epoch * plan.steps_per_epoch) * accumulation):
            next(micro_batches)  # seen before the checkpoint this run resumed from
        while step < min(plan.total_steps, (epoch + 1) * plan.steps_per_epoch):
            batches = [pipe.training_batch(next(micro_batches)) for _ in range(accumulation)]
            units = [loss_units(config.task, batch) for batch in batches]
            step_units = torch.tensor(float(sum(units)), device=device)
            if world > 1:
                dist.all_reduce(step_units)
            loss_sum = torch.zeros((), device=device)
            torch.manual_seed(config.seed * 1_000_003 + step * world + rank)  # dropout masks of this step
            for i, batch in enumerate(batches):
                # DDP averages over workers, hence the world size; gradients are exchanged once per step.
                sync = nullcontext() if i == accumulation - 1 or world == 1 else model.no_sync()
                with sync:
                    loss = model(**batch).loss
                    (loss * (units[i] * world / step_units)).backward()
                loss_sum += loss.detach() * units[i]
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if world > 1:
                dist.all_reduce(loss_sum)
            metrics = {"step": step, "epoch": epoch, "loss": float(loss_sum / step_units),
                       "learning_rate": schedule.get_last_lr()[0], "resumed_from": resumed_from,
                       "examples_per_second": (step - resumed_from) * config.batch_size / (time.perf_counter() - started)}
            _report(metrics, step, plan, config, rank, pipe, optimizer, schedule)
            if loop_config.get("kill_at_step") == step and checkpoint is None:
                _crash_once_reports_are_collected(rank == min(1, world - 1), world)


def _crash_once_reports_are_collected(victim: bool, world: int) -> None:
    """The ``kill_at_step`` test hook. Ray Train keeps a checkpoint once the controller has collected every
    worker's report of it (it polls every 2 s); a worker that dies before would take the last checkpoint with
    it, and the run would resume from an older one. So every worker waits for the controller to take its
    reports (Ray Train's own result queue), they meet at a barrier, and then the victim dies as a crashed
    process does, without any clean-up."""
    import torch.distributed as dist
    from ray.train.v2._internal.execution.context import get_train_context

    get_train_context().get_result_queue().join()
    if world > 1:
        dist.barrier()
    if victim:
        os.kill(os.getpid(), signal.SIGKILL)


def _report(metrics, step, plan, config, rank, pipe, optimizer, schedule) -> None:
    """At checkpoint steps (``ray.train.report`` is a barrier across workers, so not at every step): every
    worker reports, rank 0 with the checkpoint."""
    import ray.train

    if rank == 0:
        logger.info("step %d/%d: loss %.4f", step, plan.total_steps, metrics["loss"])
    if step % config.checkpoint_every and step != plan.total_steps:
        return
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_training_checkpoint(Path(directory), pipe, optimizer, schedule, step)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
