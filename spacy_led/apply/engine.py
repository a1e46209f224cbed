"""Documents in, records out: the one place that turns Items into Docs, runs the pipeline and makes each
document's outcome (a JSON record from the components' ``to_record`` hooks, or an error record).

Every executor runs its documents through ``Engine.run``, so a record is the same whoever computes it. Read
errors travel through the pipeline as empty placeholder Docs, so errors and results come out in input order
whatever ``n_process`` is; a Doc that a worker process lost with its batch becomes an error record too.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from .journal import ID_KEY
from .readers import Item, id_key

ERROR_KEY = "spacy_led.apply.error"  # doc.user_data: why this Doc failed (set by the error handler)
READ_ERROR_KEY = "spacy_led.apply.read_error"  # doc.user_data: the input could not be read (placeholder Doc)
SEQ_KEY = "spacy_led.apply.seq"  # doc.user_data: position in this run's stream (finds Docs a worker lost)

# spaCy calls the error handler with no Docs when a worker process failed a whole batch: remembered here.
_WORKER_ERRORS: List[str] = []


def mark_failed(name, pipe, docs, err) -> None:
    """spaCy error handler: the Doc is kept (without this component's annotations) and marked as failed."""
    reason = f"{type(err).__name__}: {err}" if name is None else f"{name}: {type(err).__name__}: {err}"
    for doc in docs or ():
        doc.user_data.setdefault(ERROR_KEY, reason)
    if not docs:
        _WORKER_ERRORS.append(reason)


def _lost_reason(doc) -> str:
    """Why no Doc came back for ``doc``: spaCy drops a Doc on which a component without its own ``pipe``
    failed (after calling the error handler, which marked it here, in this process), and a worker process that
    dies takes its batch with it."""
    if ERROR_KEY in doc.user_data:
        return doc.user_data[ERROR_KEY]
    if _WORKER_ERRORS:
        return _WORKER_ERRORS[-1]
    return "no result came back: a component dropped the document after an error, or its worker process died"


def _load_malloc_trim():
    """glibc's ``malloc_trim``, or None. Batches of varying shapes fragment the C heap: the freed tensors'
    memory stays in the process (RSS grows by ~100 MB per 1,000 mixed-length documents) unless it is handed
    back to the OS after each batch; live memory does not grow (see benchmarks/bench_cli.py)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class Outcome:
    """What became of one document: its record and annotated Doc, or its error record."""

    item: Item
    record: Optional[Dict[str, Any]] = None
    doc: Any = None
    error: Optional[Dict[str, Any]] = None

    @property
    def tokens(self) -> int:
        return len(self.doc) if self.doc is not None else 0


def error_record(item: Item, reason: str) -> Dict[str, Any]:
    return {"id": item.id, "position": item.position, "reason": reason}


class Engine:
    """A loaded pipeline and the run's default questions."""

    def __init__(self, nlp, questions: Optional[List[str]] = None):
        self.nlp = nlp
        self.questions = questions
        self.recorders = [pipe for _, pipe in nlp.pipeline if hasattr(pipe, "to_record")]
        nlp.set_error_handler(mark_failed)

    def prepare(self, item: Item, seq: int):
        from ..extensions import ensure_extensions

        if item.error is not None:
            doc = self.nlp.make_doc("")
            doc.user_data[READ_ERROR_KEY] = item.error
        elif item.doc is not None:
            doc = item.doc
            for key in (ERROR_KEY, READ_ERROR_KEY, SEQ_KEY):
                doc.user_data.pop(key, None)
        else:
            doc = self.nlp.make_doc(item.text)
        chosen = item.questions if item.questions is not None else self.questions
        if chosen is not None:
            ensure_extensions()
            doc._.questions = list(chosen)
        doc.user_data[ID_KEY] = item.id
        doc.user_data[SEQ_KEY] = seq
        return doc

    def record(self, doc) -> Dict[str, Any]:
        """The JSON record of a processed Doc: its id and each component's ``to_record`` fields."""
        record: Dict[str, Any] = {"id": doc.user_data.get(ID_KEY)}
        for pipe in self.recorders:
            record.update(pipe.to_record(doc))
        return record

    def run(self, items: Iterable[Item], batch_size: int, n_process: int = 1) -> Iterator[Outcome]:
        """One Outcome per Item, in input order."""
        sent: Dict[int, Tuple[Item, Any]] = {}  # in flight: the Item and the Doc made of it

        def docs_in() -> Iterator[Any]:
            for seq, item in enumerate(items):
                doc = self.prepare(item, seq)
                sent[seq] = (item, doc)
                yield doc

        del _WORKER_ERRORS[:]
        next_seq = 0
        for doc in self.nlp.pipe(docs_in(), batch_size=batch_size, n_process=n_process):
            seq = doc.user_data.pop(SEQ_KEY)
            while next_seq < seq:  # Docs that did not come back
                item, lost = sent.pop(next_seq)
                yield Outcome(item, error=error_record(item, _lost_reason(lost)))
                next_seq += 1
            item, _ = sent.pop(seq)
            next_seq = seq + 1
            reason = doc.user_data.pop(READ_ERROR_KEY, None) or doc.user_data.pop(ERROR_KEY, None)
            if reason is not None:
                yield Outcome(item, error=error_record(item, reason))
            else:
                yield Outcome(item, record=self.record(doc), doc=doc)
        for seq in sorted(sent):
            item, lost = sent.pop(seq)
            yield Outcome(item, error=error_record(item, _lost_reason(lost)))


def pending(items: Iterable[Item], done_ids: Set[str] = frozenset(), errored: Set[Tuple[str, Any]] = frozenset(),
            counts: Any = None) -> Iterator[Item]:
    """The Items still to do: not in ``done_ids`` (ids an earlier run wrote, as records or errors). A repeated
    id is an error of its own (ids are how a run resumes). ``counts`` (a Result) counts the skipped Items, and
    as failed before those whose (id, position) is in ``errored``."""
    seen: Dict[str, str] = {}
    for item in items:
        key = id_key(item.id)
        duplicate = key in seen
        if not duplicate:
            seen[key] = item.position
        if key in done_ids and (not duplicate or (key, item.position) in errored):
            if counts is not None:
                counts.skipped += 1
                counts.failed_before += (key, item.position) in errored
            continue
        if duplicate:
            yield Item(item.id, item.position, error=f"duplicate id {item.id!r} (first at {seen[key]})")
            continue
        yield item
