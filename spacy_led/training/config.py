"""The settings of a distributed fine-tuning run, read from a spaCy-style ``.cfg``, JSON or YAML file.

One file describes the whole run, so the same file gives the same run on 1 or N workers (only
``--num-workers`` changes). Sections and their keys (every key but ``task`` and ``corpora.train`` has a
default)::

    [task]
    name = "summarize"              # summarize | classify | qa: trains led_summarizer / led_classifier / led_qa
    lang = "en"                     # spacy.blank(lang) tokenizes the corpus into Docs

    [model]
    checkpoint = null               # a HuggingFace LED directory to fine-tune; null: a fresh LED of [model.shape]
    gradient_checkpointing = true   # recompute activations in the backward pass (long documents fit in memory)
    vocab_size = 8000               # fresh model only: size of the byte-level BPE learnt from the training texts

    [model.shape]                   # fresh model only: arguments of the spacy_led.LED.v1 architecture
    d_model = 256

    [component]                     # settings of the spaCy component, as in a pipeline config
    max_length = 4096               # e.g. labels, multi_label, global_attention, overflow

    [corpora]
    [corpora.train]                 # any registered reader, e.g. the readers the components train on in `spacy train`
    @readers = "spacy_led.SummaryCorpus.v1"
    path = "corpus/train.jsonl"

    [training]
    seed = 0
    batch_size = 8                  # examples per optimizer step, summed over workers and accumulation steps
    accumulation_steps = 1          # micro-batches per optimizer step on each worker
    learning_rate = 5e-5
    weight_decay = 0.01             # AdamW; biases and LayerNorm weights are not decayed
    warmup_steps = 0                # linear warm-up, then linear decay to 0 at the last step
    max_grad_norm = 1.0             # 0: no clipping
    epochs = 1
    max_steps = 0                   # > 0: stop after this many optimizer steps instead of after `epochs`
    checkpoint_every = 50           # optimizer steps between Ray Train checkpoints (where a failed run resumes)
    max_failures = 3                # worker failures Ray Train recovers from by restarting at the last checkpoint
    use_gpu = false                 # one GPU per worker
    find_unused_parameters = false  # DDP: set true when no input token is global (the *_global projections go unused)

    [output]
    dir = "training/distributed"    # checkpoint/ (HuggingFace layout), pipeline/ (spaCy), initial/, ray/
    storage_path = null             # Ray Train's checkpoint storage (a shared file system or s3://...); default dir/ray

Relative paths are taken from the directory the command runs in.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..apply.options import TASKS as TASK_COMPONENTS  # the task names of `spacy-led apply --task`

CONFIG_SUFFIXES = (".cfg", ".json", ".yml", ".yaml")


class TrainingConfigError(ValueError):
    """A training config that cannot be used: which file and setting, what is wrong and what to do."""


@dataclass
class TrainingConfig:
    task: str
    train_corpus: Dict[str, Any]  # a reader block: {"@readers": ..., **arguments}
    lang: str = "en"
    checkpoint: Optional[str] = None
    gradient_checkpointing: bool = True
    vocab_size: int = 8000
    shape: Dict[str, Any] = field(default_factory=dict)
    component: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 8
    accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int = 0
    checkpoint_every: int = 50
    max_failures: int = 3
    use_gpu: bool = False
    find_unused_parameters: bool = False
    output_dir: str = "training/distributed"
    storage_path: Optional[str] = None

    @property
    def component_name(self) -> str:
        return TASK_COMPONENTS[self.task]

    def micro_batch_size(self, num_workers: int) -> int:
        """Examples per forward pass on one worker: the global batch split over workers and accumulation."""
        return self.batch_size // (num_workers * self.accumulation_steps)

    def check_workers(self, num_workers: int) -> None:
        if num_workers < 1:
            raise TrainingConfigError(f"--num-workers must be at least 1; got {num_workers}.")
        split = num_workers * self.accumulation_steps
        if self.batch_size % split:
            raise TrainingConfigError(
                f"training.batch_size {self.batch_size} does not split evenly over {num_workers} worker(s) x "
                f"{self.accumulation_steps} accumulation step(s): make it a multiple of {split}, so every "
                f"worker sees the same number of examples per step and the global batch stays {self.batch_size}."
            )

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainingConfig":
        return cls(**values)


# Where each field sits in the file: section -> {key: field name}.
_LAYOUT = {
    "task": {"name": "task", "lang": "lang"},
    "model": {"checkpoint": "checkpoint", "gradient_checkpointing": "gradient_checkpointing",
              "vocab_size": "vocab_size", "shape": "shape"},
    "component": None,  # the whole section is the component's settings
    "corpora": {"train": "train_corpus"},
    "training": {name: name for name in (
        "seed", "batch_size", "accumulation_steps", "learning_rate", "weight_decay", "warmup_steps",
        "max_grad_norm", "epochs", "max_steps", "checkpoint_every", "max_failures", "use_gpu",
        "find_unused_parameters",
    )},
    "output": {"dir": "output_dir", "storage_path": "storage_path"},
}
_TYPES = {f.name: f.type for f in dataclasses.fields(TrainingConfig)}
_SCALAR_KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str, "Optional[str]": (str, type(None))}


def load_training_config(path: Union[str, Path], overrides: Optional[Dict[str, Any]] = None) -> TrainingConfig:
    """Read and check a training config; ``overrides`` are ``{"training.batch_size": 16, ...}``."""
    path = Path(path)
    if not path.is_file():
        raise TrainingConfigError(f"training config {str(path)!r} does not exist (or is not a file).")
    if path.suffix not in CONFIG_SUFFIXES:
        raise TrainingConfigError(
            f"training config {str(path)!r}: unknown format {path.suffix!r}; use one of {', '.join(CONFIG_SUFFIXES)}."
        )
    sections = _read_sections(path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise TrainingConfigError(f"override {dotted!r} must name section.key, e.g. training.batch_size.")
        sections.setdefault(section, {})[key] = value
    return config_from_sections(sections, source=str(path))


def _read_sections(path: Path) -> Dict[str, Any]:
    if path.suffix == ".cfg":
        from thinc.api import Config

        try:
            return dict(Config().from_disk(path, interpolate=True))
        except Exception as e:  # thinc raises several types for malformed files
            raise TrainingConfigError(f"training config {str(path)!r} cannot be parsed: {e}") from None
    import srsly

    try:
        data = srsly.read_json(path) if path.suffix == ".json" else srsly.read_yaml(path)
    except (ValueError, json.JSONDecodeError, Exception) as e:
        raise TrainingConfigError(f"training config {str(path)!r} cannot be parsed: {e}") from None
    if not isinstance(data, dict):
        raise TrainingConfigError(f"training config {str(path)!r} must hold sections (an object at the top level).")
    return data


def config_from_sections(sections: Dict[str, Any], source: str = "<config>") -> TrainingConfig:
    """Map the file's sections onto :class:`TrainingConfig`, rejecting unknown sections and keys by name."""
    values: Dict[str, Any] = {}
    for section, content in sections.items():
        if section not in _LAYOUT:
            raise TrainingConfigError(f"{source}: unknown section [{section}]; sections are {', '.join(_LAYOUT)}.")
        if not isinstance(content, dict):
            raise TrainingConfigError(f"{source}: [{section}] must be a section of key = value settings.")
        keys = _LAYOUT[section]
        if keys is None:
            values[section] = dict(content)
            continue
        for key, value in content.items():
            if key not in keys:
                raise TrainingConfigError(
                    f"{source}: unknown setting {section}.{key}; [{section}] takes {', '.join(keys)}."
                )
            values[keys[key]] = value
    for required, where in (("task", "task.name"), ("train_corpus", "corpora.train")):
        if required not in values:
            raise TrainingConfigError(f"{source}: {where} is missing (see spacy_led.training.config).")
    _check_values(values, source)
    return TrainingConfig(**values)


def _check_values(values: Dict[str, Any], source: str) -> None:
    if values["task"] not in TASK_COMPONENTS:
        raise TrainingConfigError(
            f"{source}: task.name {values['task']!r} is not one of {', '.join(TASK_COMPONENTS)}."
        )
    corpus = values["train_corpus"]
    if not isinstance(corpus, dict) or "@readers" not in corpus:
        raise TrainingConfigError(
            f"{source}: corpora.train must be a reader block, e.g. "
            '[corpora.train] @readers = "spacy_led.SummaryCorpus.v1" path = "train.jsonl".'
        )
    for name in ("shape", "component"):
        if name in values and not isinstance(values[name], dict):
            raise TrainingConfigError(f"{source}: {name} must be a section of settings; got {values[name]!r}.")
    for name, value in values.items():
        kind = _SCALAR_KINDS.get(_TYPES[name])
        if kind is None:
            continue
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise TrainingConfigError(f"{source}: {name} must be {_TYPES[name]}; got {value!r}.")
    positive = ("batch_size", "accumulation_steps", "checkpoint_every", "vocab_size")
    for name in positive:
        if name in values and values[name] < 1:
            raise TrainingConfigError(f"{source}: {name} must be at least 1; got {values[name]}.")
    for name in ("learning_rate", "weight_decay", "warmup_steps", "max_grad_norm", "epochs", "max_steps",
                 "max_failures"):
        if name in values and values[name] < 0:
            raise TrainingConfigError(f"{source}: {name} must not be negative; got {values[name]}.")
    if not values.get("max_steps") and values.get("epochs", 1) < 1:
        raise TrainingConfigError(f"{source}: set training.epochs >= 1 or training.max_steps >= 1.")
