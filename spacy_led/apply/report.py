"""What a run tells its user: the progress bar while it runs, the summary and exit status at the end."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class Result:
    done: int = 0  # documents written in this run
    failed: int = 0  # documents written to the errors in this run
    skipped: int = 0  # already done (or failed) in a previous run
    failed_before: int = 0  # of the skipped, those that failed
    tokens: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    stopped: Optional[str] = None  # why a run stopped before its end without being interrupted
    output: str = ""
    errors: str = ""

    @property
    def exit_code(self) -> int:
        """0 all documents done, 1 some failed (now or in an earlier run) or the run stopped, 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.failed_before or self.stopped) else 0

    def summary(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{'Interrupted' if self.interrupted else 'Stopped' if self.stopped else 'Finished'} in {self.seconds:.1f}s: "
            f"{self.done} documents done ({rate:.1f} docs/s, {self.tokens / max(self.seconds, 1e-9):.0f} tokens/s), "
            f"{self.failed} failed, {self.skipped} skipped (already done in a previous run"
            + (f", {self.failed_before} of them failed" if self.failed_before else "") + ").",
            f"Output: {self.output}",
        ]
        if self.failed or self.failed_before:
            lines.append(f"Some documents FAILED: see {self.errors} (exit status 1).")
        if self.stopped:
            lines.append(f"The run STOPPED: {self.stopped}")
        if self.interrupted or self.stopped:
            lines.append("Run the same command again to resume where this run stopped.")
        return "\n".join(lines)


class Progress:
    """tqdm on stderr (spaCy depends on tqdm) with documents/s, tokens/s and the time left."""

    def __init__(self, total: Optional[int], enabled: bool):
        self.bar = None
        self.start = time.perf_counter()
        self.tokens = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="doc", file=sys.stderr, dynamic_ncols=True, smoothing=0.1,
                            desc="spacy-led")

    def update(self, docs: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.0f} tokens/s", refresh=False)
            self.bar.update(docs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
