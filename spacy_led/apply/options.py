"""What one ``spacy-led apply`` run is asked to do: every option in one dataclass, checked in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

TASKS = {"summarize": "led_summarizer", "classify": "led_classifier", "qa": "led_qa"}
INPUT_FORMATS = ("jsonl", "txt", "spacy")
OVERFLOW_CHOICES = ("chunk", "truncate", "error")
QUANTIZE_CHOICES = ("int8",)


class UsageError(Exception):
    """A bad command line or an unusable input/output path: exit status 2, before any work starts."""


@dataclass
class ApplyOptions:
    """The options of one run. ``model`` or ``checkpoint`` + ``task`` say which pipeline; ``input``/``output``
    are paths (with ``ray``, the input may be any URI Ray Data reads and the output is a directory of parts)."""

    input: str
    output: str
    model: Optional[str] = None
    checkpoint: Optional[str] = None  # a HuggingFace LED directory or hub id
    revision: Optional[str] = None  # the hub revision of a hub id checkpoint
    task: Optional[str] = None
    component_config: Dict[str, Any] = field(default_factory=dict)
    code: Optional[str] = None  # a Python file with custom components, imported before the pipeline loads
    input_format: Optional[str] = None  # None: from the input's name
    text_key: str = "text"
    id_key: str = "id"
    questions: Optional[List[str]] = None
    batch_size: int = 32
    batch_token_budget: Optional[int] = None
    overflow: Optional[str] = None
    max_length: Optional[int] = None
    quantize: Optional[str] = None  # "int8": the components run dynamic int8 Linear layers (CPU)
    n_process: int = 1  # worker processes (local) or Ray actors (with ``ray``)
    gpu_id: int = -1
    errors: Optional[str] = None  # local: default OUTPUT.errors.jsonl
    spacy_output: Optional[str] = None  # local: the DocBin file; Ray: DocBin parts, merged to here by --merge
    ray: Optional[str] = None  # a Ray address, "auto" or "local"; None runs here
    part_size: int = 1000  # Ray: JSONL lines per part
    merge: Optional[str] = None  # Ray: after a complete run, merge the parts into this JSONL file
    progress: bool = True

    def check(self) -> None:
        """Usage errors that need no file or model: raised before anything is loaded or written."""
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1.")
        if self.n_process < 1:
            raise UsageError("--n-process must be at least 1.")
        if self.part_size < 1:
            raise UsageError("--part-size must be at least 1.")
        if self.batch_token_budget is not None and self.batch_token_budget < 1:
            raise UsageError("--batch-token-budget must be positive.")
        if self.overflow is not None and self.overflow not in OVERFLOW_CHOICES:
            raise UsageError(f"--overflow must be one of {', '.join(OVERFLOW_CHOICES)}.")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise UsageError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}.")
        if self.quantize is not None and self.gpu_id >= 0:
            raise UsageError("--quantize int8 runs on the CPU; leave out --gpu-id or --quantize.")
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise UsageError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}.")
        if self.n_process > 1 and self.gpu_id >= 0 and not self.ray:
            raise UsageError("--n-process > 1 runs on the CPU only; use one process with --gpu-id.")
        if self.checkpoint and self.task not in TASKS:
            raise UsageError(f"--checkpoint needs --task, one of {', '.join(TASKS)}.")
        if not self.checkpoint and not self.model:
            raise UsageError("give MODEL (a pipeline directory or package) or --checkpoint DIR --task TASK.")
        if self.revision and not self.checkpoint:
            raise UsageError("--revision pins the hub revision of --checkpoint; give --checkpoint ORG/NAME too.")
        if self.merge and not self.ray:
            raise UsageError("--merge joins the part files of a --ray run; a local run writes OUTPUT directly.")

    @property
    def errors_path(self) -> str:
        return self.errors or self.output + ".errors.jsonl"

    def to_dict(self) -> Dict[str, Any]:
        """Plain data, to send to Ray workers."""
        return asdict(self)
