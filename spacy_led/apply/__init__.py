"""``spacy-led apply``: run an LED pipeline over a corpus, resumably, writing one JSON record per document.

    readers.py    input documents (JSONL lines, .txt files, DocBin files) -> Items, bad input as error Items
    journal.py    durable output: whole lines, torn-line repair, atomic files, what earlier runs finished
    engine.py     Items -> Docs -> records (each component's ``to_record`` hook) or error records, in order
    executors.py  one interface; the local executor (in-process or ``n_process`` workers)
    ray_executor.py  Ray Data end to end: parts read, processed and written by the workers, a manifest
    merge.py      the part files of a Ray run -> one JSONL (and DocBin) in input order
    options.py    every option of a run, in one dataclass
    report.py     progress bar, summary, exit status

Exit status of a run: 0 all documents done, 1 some document failed (see the errors), 2 usage error, 130
interrupted (run the same command again to resume).
"""
from .executors import Executor, LocalExecutor, executor_for, run_apply
from .options import TASKS, ApplyOptions, UsageError
from .pipeline import load_pipeline
from .report import Result

__all__ = ["ApplyOptions", "Executor", "LocalExecutor", "Result", "TASKS", "UsageError", "executor_for",
           "load_pipeline", "run_apply"]
