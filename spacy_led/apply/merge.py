"""``spacy-led merge OUTPUT_DIR merged.jsonl``: the parts of a finished Ray run as one file in input order.

Records and errors are streamed part by part (memory does not grow with the corpus); the DocBin merge, when
asked, holds the Docs in memory as a DocBin must. Ids must be unique across the corpus, as in a local run: an
id seen in an earlier part makes the later record an error record.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .journal import ID_KEY, write_atomic
from .options import UsageError
from .parts import Manifest, part_files
from .readers import id_key


@dataclass
class MergeResult:
    documents: int = 0
    failed: int = 0
    output: str = ""
    errors: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        text = f"Merged {self.documents} records into {self.output}, {self.failed} errors into {self.errors}."
        return text + (f"\nSome documents FAILED: see {self.errors} (exit status 1)." if self.failed else "")


def merge_parts(output_dir: str, merged: str, errors: Optional[str] = None,
                spacy_output: Optional[str] = None) -> MergeResult:
    out_dir = Path(output_dir)
    manifest = Manifest(out_dir)
    if not manifest.path.exists():
        raise UsageError(f"{output_dir!r} has no {manifest.path.name}: not the output directory of "
                         f"`spacy-led apply --ray`.")
    if not manifest.complete:
        raise UsageError(f"the run writing {output_dir!r} has not finished: run the same `spacy-led apply` "
                         f"command again (it continues where it stopped), then merge.")
    merged_path = Path(merged)
    errors_path = Path(errors) if errors else merged_path.with_name(merged_path.name + ".errors.jsonl")
    result = MergeResult(output=str(merged_path), errors=str(errors_path))
    seen: Dict[str, str] = {}
    tmp_out = merged_path.with_name(merged_path.name + ".tmp")
    tmp_err = errors_path.with_name(errors_path.name + ".tmp")
    merged_path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp_out, "wb") as out, open(tmp_err, "wb") as err_out:
        for entry in manifest.ordered():
            files = part_files(out_dir, entry["part"])
            with open(files["errors"], "rb") as f:
                for line in f:
                    seen.setdefault(id_key(json.loads(line)["id"]), entry["part"])
                    err_out.write(line)
                    result.failed += 1
            with open(files["records"], "rb") as f:
                for line in f:
                    record = json.loads(line)
                    first = seen.setdefault(id_key(record["id"]), entry["part"])
                    if first != entry["part"]:
                        error = {"id": record["id"], "position": entry["source"],
                                 "reason": f"duplicate id {record['id']!r} (first in part {first})"}
                        err_out.write((json.dumps(error, ensure_ascii=False) + "\n").encode("utf8"))
                        result.failed += 1
                        continue
                    out.write(line)
                    result.documents += 1
        for f in (out, err_out):
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp_err, errors_path)
    os.replace(tmp_out, merged_path)
    if spacy_output:
        _merge_docbins(out_dir, manifest, Path(spacy_output), seen)
    return result


def _merge_docbins(out_dir: Path, manifest: Manifest, target: Path, first_part: Dict[str, str]) -> None:
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    merged = DocBin(store_user_data=True)
    for entry in manifest.ordered():
        path = part_files(out_dir, entry["part"])["spacy"]
        if not path.exists():
            raise UsageError(f"part {entry['part']} has no DocBin: run apply with --spacy-output to write them.")
        for doc in DocBin().from_disk(path).get_docs(vocab):
            if first_part.get(id_key(doc.user_data.get(ID_KEY))) == entry["part"]:
                merged.add(doc)
    write_atomic(target, merged.to_bytes())
