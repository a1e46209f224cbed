"""Convert the arXiv or PubMed summarization set of Cohan et al. (2018) into the project's JSONL format.

The release (``arxiv-dataset.zip`` / ``pubmed-dataset.zip``, the ``extra`` assets of project.yml) holds
``train.txt``, ``val.txt`` and ``test.txt`` in a top folder, one paper per line as JSON:
``{"article_id": str, "abstract_text": ["<S> sentence . </S>", ...], "article_text": [paragraph, ...],
"section_names": [...], "sections": [[...], ...]}``. This script streams them straight out of the zip (or a
folder where the zip was extracted; nothing is unpacked to disk) and writes ``train.jsonl``, ``dev.jsonl``
(from ``val.txt``) and ``test.jsonl`` to ``out_dir``, one ``{"id", "text", "summary"}`` per line: the article
paragraphs joined by newlines, the abstract sentences without their ``<S>``/``</S>`` markers joined by spaces,
as the HuggingFace ``scientific_papers`` loader does. Papers with an empty article or abstract are skipped.

Usage: python scripts/convert_cohan.py assets/arxiv-dataset.zip corpus/arxiv --limit 2000
"""
from __future__ import annotations

import argparse
import io
import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, TextIO

# Release file -> the split name the project uses.
SPLITS = {"train.txt": "train", "val.txt": "dev", "test.txt": "test"}


@contextmanager
def open_split(source: Path, filename: str) -> Iterator[Optional[TextIO]]:
    """The release file ``filename`` (e.g. ``val.txt``) as text, from a zip or a folder; None if absent."""
    if source.is_dir():
        matches = sorted(source.rglob(filename))
        if not matches:
            yield None
            return
        with open(matches[0], encoding="utf8") as f:
            yield f
        return
    with zipfile.ZipFile(source) as archive:
        members = sorted(n for n in archive.namelist() if n.rsplit("/", 1)[-1] == filename)
        if not members:
            yield None
            return
        with archive.open(members[0]) as raw:
            yield io.TextIOWrapper(raw, encoding="utf8")


def clean_sentence(sentence: str) -> str:
    return sentence.replace("<S>", "").replace("</S>", "").strip()


def convert_record(paper: Dict) -> Optional[Dict[str, str]]:
    text = "\n".join(p.strip() for p in paper.get("article_text", []) if p and p.strip())
    summary = " ".join(s for s in (clean_sentence(x) for x in paper.get("abstract_text", [])) if s)
    if not text or not summary:
        return None
    return {"id": str(paper.get("article_id", "")), "text": text, "summary": summary}


def convert(source: Path, out_dir: Path, limit: int = 0) -> Dict[str, Dict[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Dict[str, int]] = {}
    for filename, split in SPLITS.items():
        with open_split(source, filename) as lines:
            if lines is None:
                continue
            written = skipped = 0
            with open(out_dir / f"{split}.jsonl", "w", encoding="utf8") as out:
                for line in lines:
                    if not line.strip():
                        continue
                    record = convert_record(json.loads(line))
                    if record is None:
                        skipped += 1
                        continue
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written += 1
                    if limit and written >= limit:
                        break
            stats[split] = {"papers": written, "skipped": skipped}
    if "train" not in stats or "dev" not in stats:
        raise SystemExit(f"{source} has no train.txt and val.txt: is it the arXiv or PubMed release of Cohan et al.?")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="arxiv-dataset.zip / pubmed-dataset.zip, or the extracted folder")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="first N papers of each split (0 = all)")
    args = parser.parse_args()
    for split, counts in convert(args.source, args.out_dir, args.limit).items():
        print(f"{split}: {counts['papers']} papers written, {counts['skipped']} skipped (empty article or abstract)")


if __name__ == "__main__":
    main()
