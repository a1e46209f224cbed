"""Turn documents in the project's JSONL format into the files the training configs read.

Input: ``<in_dir>/train.jsonl`` and ``<in_dir>/dev.jsonl`` (and ``<in_dir>/<name>-train.jsonl`` /
``<name>-dev.jsonl`` for each ``--include name``, appended after them), one document per line with ``text`` and any of
``summary`` (a reference summary), ``labels`` (a label or a list of labels) and ``qas`` (SQuAD 2.0 questions:
``question``, ``id``, ``is_impossible``, ``answers`` with ``text`` and ``answer_start`` character offsets).

Output, in ``<out_dir>`` for each split:

- ``<split>.jsonl``: ``{"id", "text", "summary"?, "labels"?}`` read by ``spacy_led.SummaryCorpus.v1`` and
  ``spacy_led.LabelCorpus.v1``;
- ``<split>-squad.json``: SQuAD 2.0 JSON (one article per document with ``qas``) read by
  ``spacy_led.SquadCorpus.v1``.

Every answer is checked to sit at its ``answer_start`` before anything is written, so a broken offset fails
here with the document and question named, not deep inside training. ``--limit`` keeps the first N documents
of each split (0 = all, counted over all its files in order) and ``--max-chars`` leaves out documents longer
than that (0 = none), e.g. for a quick run.

Usage: python scripts/preprocess.py sample corpus/sample [--include wikipedia] [--limit 0] [--max-chars 0]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

SPLITS = ("train", "dev")


def read_jsonl(path: Path) -> Iterator[Dict[str, Any]]:
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                record = json.loads(line)
                record.setdefault("id", f"{path.stem}-{line_no}")
                yield record


def check_record(path: Path, record: Dict[str, Any]) -> None:
    text = record.get("text")
    where = f"{path}, document {record['id']!r}"
    if not isinstance(text, str) or not text.strip():
        sys.exit(f"{where}: no text.")
    for qa in record.get("qas", []):
        if qa.get("is_impossible"):
            if qa.get("answers"):
                sys.exit(f"{where}, question {qa.get('id')!r}: unanswerable but has answers.")
            continue
        if not qa.get("answers"):
            sys.exit(f"{where}, question {qa.get('id')!r}: answerable but has no answer.")
        for answer in qa["answers"]:
            start, answer_text = answer["answer_start"], answer["text"]
            found = text[start : start + len(answer_text)]
            if found != answer_text:
                sys.exit(f"{where}, question {qa.get('id')!r}: answer {answer_text!r} is not at character "
                         f"{start} (found {found!r}).")


def to_squad(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    data = [
        {"title": str(r["id"]), "paragraphs": [{"context": r["text"], "qas": r["qas"]}]}
        for r in records
        if r.get("qas")
    ]
    return {"version": "v2.0", "data": data}


def convert(
    in_dir: Path, out_dir: Path, limit: int = 0, include: Sequence[str] = (), max_chars: int = 0
) -> Dict[str, Dict[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in SPLITS:
        sources = [in_dir / f"{split}.jsonl", *(in_dir / f"{name}-{split}.jsonl" for name in include)]
        for source in sources:
            if not source.exists():
                sys.exit(f"{source} does not exist: {in_dir} needs train.jsonl and dev.jsonl (and "
                         f"<name>-train.jsonl / <name>-dev.jsonl for each --include name).")
        records: List[Dict[str, Any]] = []
        for source in sources:
            for record in read_jsonl(source):
                if limit and len(records) >= limit:
                    break
                check_record(source, record)
                if not max_chars or len(record["text"]) <= max_chars:
                    records.append(record)
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf8") as f:
            for r in (r for r in records if "summary" in r or "labels" in r):  # QA-only documents: SQuAD JSON only
                kept = {k: r[k] for k in ("id", "text", "summary", "labels") if k in r}
                f.write(json.dumps(kept, ensure_ascii=False) + "\n")
        with open(out_dir / f"{split}-squad.json", "w", encoding="utf8") as f:
            json.dump(to_squad(records), f, ensure_ascii=False)
        questions = [qa for r in records for qa in r.get("qas", [])]
        stats[split] = {
            "documents": len(records),
            "summaries": sum("summary" in r for r in records),
            "labelled": sum("labels" in r for r in records),
            "questions": len(questions),
            "unanswerable": sum(bool(qa.get("is_impossible")) for qa in questions),
        }
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("in_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="first N documents of each split (0 = all)")
    parser.add_argument("--include", action="append", default=[], metavar="NAME",
                        help="also read <in_dir>/NAME-train.jsonl and NAME-dev.jsonl (repeatable)")
    parser.add_argument("--max-chars", type=int, default=0, help="leave out longer documents (0 = keep all)")
    args = parser.parse_args()
    for split, counts in convert(args.in_dir, args.out_dir, args.limit, args.include, args.max_chars).items():
        print(f"{split}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
