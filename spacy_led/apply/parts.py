"""The output directory of a Ray run: one set of part files per part of the input, and a manifest.

    OUTPUT_DIR/parts/NAME.jsonl         records of the part's documents, in input order
    OUTPUT_DIR/parts/NAME.errors.jsonl  error records of the part's documents
    OUTPUT_DIR/parts/NAME.spacy         annotated Docs (with --spacy-output)
    OUTPUT_DIR/manifest.jsonl           one line per complete part (appended by the driver, fsynced)
    OUTPUT_DIR/complete.json            written once every part of the input is in the manifest

A part is named from its input file and its index in that file, so the same command names the same parts:
a run started again skips the parts in the manifest and redoes the others (a part file written but not yet
in the manifest is rewritten whole, atomically), so every document is in exactly one complete part.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set

from .engine import Outcome
from .journal import AppendWriter, jsonl_bytes, recover_jsonl, write_atomic

MANIFEST = "manifest.jsonl"
COMPLETE = "complete.json"


def part_name(source: str, index: int) -> str:
    """A file name for part ``index`` of the input file ``source`` (its path relative to the input)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source)[-60:]
    digest = hashlib.sha1(source.encode("utf8")).hexdigest()[:8]
    return f"{slug}-{digest}-{index:06d}"


def order_key(source: str, index: int) -> List[Any]:
    """Sorts parts in the order the local readers read documents (sorted relative paths, then position)."""
    return [source.split("/"), index]


def part_files(out_dir: Path, name: str) -> Dict[str, Path]:
    base = out_dir / "parts"
    return {"records": base / f"{name}.jsonl", "errors": base / f"{name}.errors.jsonl", "spacy": base / f"{name}.spacy"}


def write_part(out_dir: Path, name: str, outcomes: Sequence[Outcome], keep_docs: bool) -> None:
    """The part's files, each written whole (temporary name, fsync, rename)."""
    files = part_files(out_dir, name)
    files["records"].parent.mkdir(parents=True, exist_ok=True)
    ok = [o for o in outcomes if o.error is None]
    if keep_docs:
        from spacy.tokens import DocBin

        write_atomic(files["spacy"], DocBin(store_user_data=True, docs=[o.doc for o in ok]).to_bytes())
    write_atomic(files["errors"], jsonl_bytes([o.error for o in outcomes if o.error is not None]))
    write_atomic(files["records"], jsonl_bytes([o.record for o in ok]))


class Manifest:
    """The complete parts of an output directory. Entries: part, source, key, documents, failed, tokens."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        self.entries = {entry["part"]: entry for entry in recover_jsonl(self.path, "part")} if self.path.exists() else {}
        self.writer = None

    @property
    def done(self) -> Set[str]:
        return set(self.entries)

    def add(self, entry: Dict[str, Any]) -> None:
        if entry["part"] in self.entries:  # a part retried after its first result came back
            return
        if self.writer is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.writer = AppendWriter(self.path)
        self.writer.write([entry])
        self.entries[entry["part"]] = entry

    def mark_complete(self) -> None:
        totals = {"parts": len(self.entries), "documents": sum(e["documents"] for e in self.entries.values()),
                  "failed": sum(e["failed"] for e in self.entries.values())}
        write_atomic(self.out_dir / COMPLETE, json.dumps(totals).encode("utf8"))

    @property
    def complete(self) -> bool:
        return (self.out_dir / COMPLETE).exists()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def ordered(self) -> List[Dict[str, Any]]:
        return sorted(self.entries.values(), key=lambda e: e["key"])
