"""Durable output: whole JSON lines that survive a kill, and the resume state read back from them.

* every record is one complete line; the records of a batch are written with one ``write``, then flushed and
  fsynced, so a kill leaves at most a partial *last* line, which ``recover_jsonl`` truncates on the next run;
* a file that must appear whole (a Ray part, a DocBin shard) is written to a temporary name and renamed.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set, Tuple

from .readers import id_key

logger = logging.getLogger("spacy_led")

ID_KEY = "spacy_led.id"  # doc.user_data: the document's id (kept in DocBin output)


def recover_jsonl(path: Path, field_name: str = "id") -> List[dict]:
    """The complete records of a JSONL file written by an earlier run. A trailing partial line (a killed
    write), or anything from the first unreadable line on, is truncated away: those documents are redone."""
    if not path.exists():
        return []
    records = []
    good = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not isinstance(record, dict) or field_name not in record:
                break
            records.append(record)
            good += len(raw)
    if good != path.stat().st_size:
        logger.warning("%s: truncating %d bytes of an incomplete record left by an interrupted run.",
                       path, path.stat().st_size - good)
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return records


def jsonl_bytes(records: Sequence[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf8")


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or all of ``data``, whenever the process dies."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AppendWriter:
    """Appends whole lines and makes them durable: one write per batch, then flush + fsync."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")

    def write(self, records: Sequence[dict]) -> None:
        if not records:
            return
        self.file.write(jsonl_bytes(records))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class DocShards:
    """Local ``--spacy-output``: each batch's Docs go to an atomically written shard beside the target; the
    shards (and an existing target) are merged at the end in the order of OUTPUT, one Doc per id."""

    def __init__(self, target: Path):
        self.target = target
        self.dir = target.with_name(target.name + ".parts")
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.dir.glob("*.spacy"))
        self.next = int(existing[-1].stem) + 1 if existing else 0

    def write(self, docs: Sequence[Any]) -> None:
        from spacy.tokens import DocBin

        if not docs:
            return
        write_atomic(self.dir / f"{self.next:08d}.spacy", DocBin(store_user_data=True, docs=docs).to_bytes())
        self.next += 1

    def merge(self, vocab, order: Sequence[str]) -> int:
        from spacy.tokens import DocBin

        by_id: Dict[str, Any] = {}
        sources = ([self.target] if self.target.exists() else []) + sorted(self.dir.glob("*.spacy"))
        for source in sources:
            for doc in DocBin().from_disk(source).get_docs(vocab):
                by_id.setdefault(id_key(doc.user_data.get(ID_KEY)), doc)
        docs = [by_id[k] for k in order if k in by_id]
        write_atomic(self.target, DocBin(store_user_data=True, docs=docs).to_bytes())
        shutil.rmtree(self.dir, ignore_errors=True)
        return len(docs)


class ResumeState:
    """What earlier runs of the same command finished: read from OUTPUT and the errors file (repairing a torn
    last line). A document is skipped when its id is done; a repeated id is skipped when it failed at the same position."""

    def __init__(self, output: Path, errors: Path):
        previous = recover_jsonl(output)
        previous_errors = recover_jsonl(errors)
        self.order: List[str] = [id_key(r["id"]) for r in previous]  # OUTPUT's order, for the DocBin merge
        self.done_ids: Set[str] = set(self.order) | {id_key(r["id"]) for r in previous_errors}
        self.errored: Set[Tuple[str, Any]] = {(id_key(r["id"]), r.get("position")) for r in previous_errors}
