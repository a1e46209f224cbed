"""Where the documents are processed: here (one process), in ``n_process`` forked workers, or on Ray.

Every executor takes the same ``ApplyOptions`` and returns the same ``Result``; all of them run the documents
through ``Engine.run`` and make the same guarantees: records in input order, each document exactly once after
any number of kills and restarts, failures as error records (exit status 1), progress and a DocBin on request.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import List

from .engine import Engine, Outcome, pending, release_memory
from .journal import AppendWriter, DocShards, ResumeState
from .options import ApplyOptions, UsageError
from .pipeline import configure, load_pipeline
from .readers import count_input, id_key, input_kind, read_input
from .report import Progress, Result


class Executor(ABC):
    """Runs one job described by ``ApplyOptions``."""

    @abstractmethod
    def run(self, options: ApplyOptions, nlp=None) -> Result:
        """Process the input, resuming an earlier run of the same command. ``nlp``: an already loaded and
        configured pipeline to use instead of loading one (for callers that keep it between runs)."""


class LocalExecutor(Executor):
    """OUTPUT is one JSONL file appended batch by batch (see ``journal``); ``n_process`` > 1 forks workers
    through ``nlp.pipe``. A killed run continues where it stopped: the ids already in OUTPUT and in the errors
    file are skipped."""

    def run(self, options: ApplyOptions, nlp=None) -> Result:
        options.check()
        in_path, out_path, err_path = Path(options.input), Path(options.output), Path(options.errors_path)
        if out_path.is_dir():
            raise UsageError(f"output {options.output!r} is a directory; give a .jsonl file path "
                             f"(a directory of parts is what --ray writes).")
        if not in_path.exists():
            raise UsageError(f"input {options.input!r} does not exist.")
        kind = options.input_format or input_kind(in_path)
        if nlp is None:
            nlp = load_pipeline(options)
        else:
            configure(nlp, options)
        engine = Engine(nlp, options.questions)
        state = ResumeState(out_path, err_path)
        result = Result(output=str(out_path), errors=str(err_path))
        total = count_input(in_path, kind)
        out, err_out = AppendWriter(out_path), AppendWriter(err_path)
        shards = DocShards(Path(options.spacy_output)) if options.spacy_output else None
        items = pending(read_input(in_path, kind, nlp.vocab, options.text_key, options.id_key), state.done_ids,
                        state.errored, result)
        start = time.perf_counter()
        progress = Progress(None if total is None else max(total - len(state.done_ids), 0), options.progress)
        batch: List[Outcome] = []

        def flush() -> None:
            ok = [o for o in batch if o.error is None]
            if shards is not None:
                shards.write([o.doc for o in ok])
            err_out.write([o.error for o in batch if o.error is not None])
            out.write([o.record for o in ok])
            state.order.extend(id_key(o.item.id) for o in ok)
            tokens = sum(o.tokens for o in ok)
            result.done += len(ok)
            result.failed += len(batch) - len(ok)
            result.tokens += tokens
            progress.update(len(batch), tokens)
            batch.clear()
            release_memory()

        try:
            for outcome in engine.run(items, options.batch_size, options.n_process):
                batch.append(outcome)
                if len(batch) >= options.batch_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            progress.close()
            out.close()
            err_out.close()
            result.seconds = time.perf_counter() - start
        if shards is not None and not result.interrupted:
            shards.merge(nlp.vocab, state.order)
        return result


def executor_for(options: ApplyOptions) -> Executor:
    if options.ray:
        from .ray_executor import RayExecutor

        return RayExecutor()
    return LocalExecutor()


def run_apply(options: ApplyOptions, nlp=None) -> Result:
    """Run ``options`` on the executor they ask for."""
    return executor_for(options).run(options, nlp)
