"""Convert Qasper (Dasigi et al., 2021) into SQuAD 2.0 JSON for ``spacy_led.SquadCorpus.v1``.

The release (``qasper-train-dev-v0.3.tgz``, an ``extra`` asset of project.yml) holds
``qasper-train-v0.3.json`` and ``qasper-dev-v0.3.json``: ``{paper_id: {"title", "abstract", "full_text":
[{"section_name", "paragraphs": [...]}], "qas": [{"question", "question_id", "answers": [{"answer":
{"unanswerable", "extractive_spans", "yes_no", "free_form_answer", "evidence", ...}}]}]}}``.

Each paper becomes one SQuAD article with one paragraph, the whole paper: title, abstract, then each section
(its name, then its paragraphs), separated by blank lines; LED reads it in windows. Questions:

- answered by some annotator with exactly one extractive span found in that text: answerable; every such
  span is a gold answer (SQuAD keeps alternatives), at its first occurrence in the paper;
- marked unanswerable by every annotator: unanswerable (``is_impossible``);
- otherwise (yes/no, free-form, multi-span answers, spans not found verbatim): skipped, and counted, since an
  extractive QA model cannot produce them.

Writes ``train-squad.json`` and ``dev-squad.json`` to ``out_dir``.

Usage: python scripts/convert_qasper.py assets/qasper-train-dev-v0.3.tgz corpus/qasper --limit 2000
"""
from __future__ import annotations

import argparse
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

SPLITS = {"train": "train", "dev": "dev"}  # the word in the release file name -> project split


def load_split(source: Path, word: str) -> Optional[Dict[str, Any]]:
    """The ``qasper-<word>-*.json`` of the release: from the .tgz, a folder, or None if absent."""
    def wanted(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return base.startswith("qasper-") and f"-{word}-" in base and base.endswith(".json")

    if source.is_dir():
        matches = sorted(p for p in source.rglob("*.json") if wanted(p.name))
        if not matches:
            return None
        with open(matches[0], encoding="utf8") as f:
            return json.load(f)
    with tarfile.open(source, "r:*") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile() and wanted(m.name)), key=lambda m: m.name)
        if not members:
            return None
        with archive.extractfile(members[0]) as f:
            return json.load(f)


def paper_text(paper: Dict[str, Any]) -> str:
    blocks = [paper.get("title") or "", paper.get("abstract") or ""]
    for section in paper.get("full_text") or []:
        blocks.append(section.get("section_name") or "")
        blocks.extend(p for p in section.get("paragraphs") or [] if isinstance(p, str))
    return "\n\n".join(b.strip() for b in blocks if b and b.strip())


def convert_question(qa: Dict[str, Any], context: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """(SQuAD question or None, what happened: answerable / unanswerable / a reason for skipping)."""
    annotations = [a.get("answer") or {} for a in qa.get("answers") or []]
    if not annotations:
        return None, "no annotation"
    golds: List[Dict[str, Any]] = []
    for answer in annotations:
        spans = [s.strip() for s in answer.get("extractive_spans") or [] if s and s.strip()]
        if len(spans) != 1:
            continue
        start = context.find(spans[0])
        if start >= 0 and not any(g["text"] == spans[0] for g in golds):
            golds.append({"text": spans[0], "answer_start": start})
    base = {"id": qa.get("question_id") or qa["question"], "question": qa["question"]}
    if golds:
        return {**base, "is_impossible": False, "answers": golds}, "answerable"
    if all(answer.get("unanswerable") for answer in annotations):
        return {**base, "is_impossible": True, "answers": []}, "unanswerable"
    if any(answer.get("yes_no") is not None for answer in annotations):
        return None, "yes/no"
    if any(len(answer.get("extractive_spans") or []) > 1 for answer in annotations):
        return None, "multi-span"
    if any(answer.get("extractive_spans") for answer in annotations):
        return None, "span not found in the text"
    return None, "free-form"


def convert(source: Path, out_dir: Path, limit: int = 0) -> Dict[str, Counter]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Counter] = {}
    for word, split in SPLITS.items():
        papers = load_split(source, word)
        if papers is None:
            raise SystemExit(f"{source} has no qasper-{word}-*.json: is it the Qasper release?")
        counts: Counter = Counter()
        articles = []
        for paper_id, paper in papers.items():
            context = paper_text(paper)
            qas = []
            for qa in paper.get("qas") or []:
                converted, outcome = convert_question(qa, context)
                counts[outcome] += 1
                if converted is not None:
                    qas.append(converted)
            if qas and context:
                articles.append({"title": paper.get("title") or paper_id,
                                 "paragraphs": [{"context": context, "qas": qas}]})
                if limit and len(articles) >= limit:
                    break
        counts["papers"] = len(articles)
        with open(out_dir / f"{split}-squad.json", "w", encoding="utf8") as f:
            json.dump({"version": "v2.0", "data": articles}, f, ensure_ascii=False)
        stats[split] = counts
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="qasper-train-dev-v0.3.tgz, or the extracted folder")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="first N papers (with usable questions) per split; 0 = all")
    args = parser.parse_args()
    for split, counts in convert(args.source, args.out_dir, args.limit).items():
        print(f"{split}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
