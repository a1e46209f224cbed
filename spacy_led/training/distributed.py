"""Fine-tuning on N workers with Ray Train: prepare the start, run ``TorchTrainer``, assemble the outputs.

The driver does what must happen once, before any worker starts: it builds the component as ``spacy train``
would (the checkpoint, or a fresh LED with a BPE learnt from the training texts; the classifier's labels and
head) and writes that start as a HuggingFace directory, so every worker begins from the same weights and
tokenizer. The workers train (``spacy_led.training.loop``); from the last Ray Train checkpoint the driver
writes ``checkpoint/`` (what ``led_summarizer`` / ``led_classifier`` / ``led_qa`` load through their
``checkpoint`` setting) and ``pipeline/`` (a spaCy pipeline, ``spacy.load``-able).

Paths (corpus, checkpoint, output, storage) must be visible to every worker: one machine, or a shared file
system on a cluster (Ray Train's ``storage_path`` may also be cloud storage).
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

from .config import TrainingConfig
from .loop import StepPlan, build_pipeline, train_loop_per_worker, training_examples

logger = logging.getLogger("spacy_led")

# The files of a HuggingFace LED directory inside a training checkpoint (the rest is optimizer state).
CHECKPOINT_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TrainingResult:
    checkpoint: Path  # HuggingFace LED directory
    pipeline: Path  # spaCy pipeline directory
    steps: int
    metrics: Dict[str, Any]  # reported with the last checkpoint: step, epoch, loss (of the last step), learning rate


def import_ray_train():
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f'distributed training needs Ray Train: pip install "spacy-led[train]" ({e}).'
        ) from None
    import ray

    return ray


def absolute_paths(config: TrainingConfig) -> TrainingConfig:
    """Ray workers may run in another directory: every path becomes absolute on the driver."""
    corpus = dict(config.train_corpus)
    if isinstance(corpus.get("path"), str):
        corpus["path"] = str(Path(corpus["path"]).expanduser().resolve())
    resolve = lambda p: None if p is None else str(Path(p).expanduser().resolve())  # noqa: E731
    return replace(
        config,
        train_corpus=corpus,
        checkpoint=resolve(config.checkpoint),
        output_dir=resolve(config.output_dir),
        storage_path=config.storage_path if "://" in str(config.storage_path) else resolve(config.storage_path),
    )


def prepare_start(config: TrainingConfig, directory: Path) -> int:
    """Write the model every worker starts from to ``directory``; returns the number of usable examples."""
    from spacy.util import fix_random_seed, registry

    fix_random_seed(config.seed)
    nlp = build_pipeline(config, config.checkpoint)
    pipe = nlp.get_pipe(config.component_name)
    reader = registry.resolve({"reader": config.train_corpus})["reader"]
    pipe.initialize(lambda: reader(nlp), nlp=nlp, vocab_size=config.vocab_size)
    count = len(training_examples(config, nlp))
    StepPlan.of(config, count)  # fails here, before Ray starts, if the corpus is too small
    if directory.exists():
        shutil.rmtree(directory)
    pipe.module.save_pretrained(directory)
    pipe.tokenizer.save_pretrained(directory)
    return count


def train_distributed(
    config: TrainingConfig,
    num_workers: int,
    *,
    ray_address: Optional[str] = None,
    kill_at_step: Optional[int] = None,
) -> TrainingResult:
    """Fine-tune on ``num_workers`` Ray Train workers and write ``checkpoint/`` and ``pipeline/`` under the
    output directory. ``ray_address``: the cluster to join (None: the running one, or a new local one).
    ``kill_at_step`` is a test hook: a worker kills its own process after that step (Ray Train restarts it
    from the last checkpoint)."""
    config.check_workers(num_workers)
    config = absolute_paths(config)
    ray = import_ray_train()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    start = output / "initial"
    count = prepare_start(config, start)
    plan = StepPlan.of(config, count)
    logger.info("%d examples, %d step(s) of %d on %d worker(s)", count, plan.total_steps, config.batch_size,
                num_workers)

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "start_checkpoint": str(start), "kill_at_step": kill_at_step},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=config.use_gpu, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name="spacy-led",
            storage_path=config.storage_path or str(output / "ray"),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    checkpoint_dir = output / "checkpoint"
    with result.checkpoint.as_directory() as directory:
        if checkpoint_dir.exists():
            shutil.rmtree(checkpoint_dir)
        checkpoint_dir.mkdir()
        for name in CHECKPOINT_FILES:
            if (Path(directory) / name).exists():
                shutil.copy2(Path(directory) / name, checkpoint_dir / name)
    pipeline_dir = output / "pipeline"
    nlp = build_pipeline(config, str(checkpoint_dir))
    nlp.to_disk(pipeline_dir)
    return TrainingResult(checkpoint_dir, pipeline_dir, int(result.metrics["step"]), dict(result.metrics))
