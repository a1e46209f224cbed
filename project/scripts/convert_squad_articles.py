"""Turn whole SQuAD 2.0 articles into long documents with questions throughout, in the project's JSONL format.

SQuAD 2.0 (Rajpurkar et al., 2018; CC BY-SA 4.0) asks questions about paragraphs of Wikipedia articles. Put an
article's paragraphs back together, in order, and its questions become questions about a long document, whose
answers sit anywhere in it: real text for the QA component's long-document path. For each article:

- ``text``: the title (underscores as spaces), a blank line, then the paragraphs joined by blank lines, as many
  whole paragraphs as fit in ``--max-words`` words;
- ``qas``: ``--questions`` questions of the kept paragraphs, with every gold answer's ``answer_start`` moved to
  its place in the document: answerable ones picked evenly over the document by answer position (so some sit
  near the start, some deep inside it), plus one unanswerable question in four, picked evenly over the
  paragraphs. Gold answers that repeat the same text at the same place are kept once.

The last ``--dev-articles`` articles of the file go to ``wikipedia-dev.jsonl``, the others to
``wikipedia-train.jsonl``. Deterministic: no randomness, so the same input gives the same files.

Usage: python scripts/convert_squad_articles.py assets/squad-dev-v2.0.json sample --dev-articles 4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence


def evenly(items: Sequence[Any], count: int) -> List[Any]:
    """``count`` items spread evenly over ``items`` (first and last included), in order."""
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def article_document(article: Dict[str, Any], max_words: int, questions: int) -> Dict[str, Any]:
    text = article["title"].replace("_", " ") + "\n\n"
    words = 0
    answerable, unanswerable = [], []
    for paragraph in article["paragraphs"]:
        context = paragraph["context"]
        if words and words + len(context.split()) > max_words:
            break
        if words:
            text += "\n\n"
        offset = len(text)
        text += context
        words += len(context.split())
        for qa in paragraph["qas"]:
            if qa.get("is_impossible"):
                unanswerable.append({"id": qa["id"], "question": qa["question"], "is_impossible": True, "answers": []})
                continue
            answers = []
            for answer in qa["answers"]:
                moved = {"text": answer["text"], "answer_start": answer["answer_start"] + offset}
                if moved not in answers:
                    answers.append(moved)
            answerable.append({"id": qa["id"], "question": qa["question"], "is_impossible": False, "answers": answers})
    for qa in answerable:
        for answer in qa["answers"]:
            start = answer["answer_start"]
            assert text[start : start + len(answer["text"])] == answer["text"], (qa["id"], answer)
    n_unanswerable = questions // 4
    answerable.sort(key=lambda qa: qa["answers"][0]["answer_start"])
    qas = evenly(answerable, questions - n_unanswerable) + evenly(unanswerable, n_unanswerable)
    return {"id": f"wiki-{article['title']}", "text": text, "qas": qas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("squad_json", type=Path, help="a SQuAD 2.0 JSON file")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dev-articles", type=int, default=4, help="articles (the file's last) for the dev split")
    parser.add_argument("--max-words", type=int, default=1500, help="words of paragraphs kept per article")
    parser.add_argument("--questions", type=int, default=4, help="questions kept per article")
    args = parser.parse_args()
    with open(args.squad_json, encoding="utf8") as f:
        articles = json.load(f)["data"]
    if len(articles) <= args.dev_articles:
        parser.error(f"{args.squad_json} has {len(articles)} articles: need more than --dev-articles.")
    documents = [article_document(a, args.max_words, args.questions) for a in articles]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": documents[: -args.dev_articles], "dev": documents[-args.dev_articles :]}
    for split, records in splits.items():
        with open(args.out_dir / f"wikipedia-{split}.jsonl", "w", encoding="utf8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        words = sum(len(r["text"].split()) for r in records) / len(records)
        print(f"{split}: {len(records)} articles, {words:.0f} words on average, "
              f"{sum(len(r['qas']) for r in records)} questions")


if __name__ == "__main__":
    main()
