"""Score trained LED components against untrained ones of the same architecture on held-out documents.

For each component given, two pipelines are scored on its dev file:

- ``trained``: the training output (``model-best``), loaded with ``spacy.load``;
- ``untrained``: built from the same config with spaCy's ``init_nlp`` (same seed, same tokenizer learnt
  from the same training file, same shape) but never updated: the point training starts from. When the
  config fine-tunes a checkpoint, that is the checkpoint itself, with a fresh task head where it has none.

Metrics: ROUGE-1/2/L/Lsum F (``spacy_led.scoring``: Google's rouge-score, Porter stemming, sentences split for
ROUGE-Lsum) for summaries; accuracy (the top
label is the gold one) and spaCy's macro-averaged F for labels; SQuAD 2.0 exact match and F1 for answers,
unanswerable questions included. The table is printed in Markdown; every number goes to ``--output`` as JSON,
one row per (component, model).

Usage (from the project directory, as ``spacy project run evaluate`` calls it):
    python scripts/evaluate.py --output metrics/evaluation.json \\
        --summarizer training/summarizer/model-best --summary-train corpus/sample/train.jsonl \\
        --summary-dev corpus/sample/dev.jsonl ... (see project.yml)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import spacy
from spacy.language import Language
from spacy.training import Example
from spacy.training.initialize import init_nlp
from spacy.util import load_config

import spacy_led.corpus  # noqa: F401  (registers the readers, also when no entry point declares them)
import spacy_led.scoring  # noqa: F401  (registers the scorers)
from spacy_led.corpus import LabelCorpus, SquadCorpus, SummaryCorpus

# (metric key, label in the table), per component.
METRICS = {
    "summarizer": [("summary_rouge1_f", "ROUGE-1 F"), ("summary_rouge2_f", "ROUGE-2 F"), ("summary_rougeL_f", "ROUGE-L F"),
                   ("summary_rougeLsum_f", "ROUGE-Lsum F")],
    "classifier": [("accuracy", "accuracy"), ("cats_macro_f", "macro F")],
    "qa": [("qa_exact_match", "exact match"), ("qa_f1", "F1")],
}
READERS: Dict[str, Callable[[str], Callable[[Language], Any]]] = {
    "summarizer": lambda path: SummaryCorpus(path),
    "classifier": lambda path: LabelCorpus(path),
    "qa": lambda path: SquadCorpus(path),
}


def untrained_pipeline(trained_dir: Path, train_path: str, dev_path: str, gpu_id: int) -> Language:
    """The pipeline training started from: the trained pipeline's own config, initialized, not updated."""
    config = load_config(trained_dir / "config.cfg", overrides={"paths.train": train_path, "paths.dev": dev_path})
    return init_nlp(config, use_gpu=gpu_id)


def accuracy(examples: List[Example]) -> Optional[float]:
    """Share of documents whose highest-scoring label is a gold label (single-label classification)."""
    scored = [eg for eg in examples if eg.reference.cats]
    if not scored:
        return None
    hits = 0
    for eg in scored:
        predicted = eg.predicted.cats
        if predicted:
            best = max(predicted, key=predicted.get)
            hits += eg.reference.cats.get(best, 0.0) >= 0.5
    return hits / len(scored)


def score(nlp: Language, component: str, dev_path: str) -> Dict[str, Any]:
    """Run ``nlp`` over the dev documents (fresh predicted docs, gold kept apart) and score them."""
    gold = list(READERS[component](dev_path)(nlp))
    start = time.perf_counter()
    docs = list(nlp.pipe(eg.predicted.copy() for eg in gold))
    seconds = time.perf_counter() - start
    examples = [Example(doc, eg.reference) for doc, eg in zip(docs, gold)]
    pipe_name = nlp.pipe_names[-1]
    scores = dict(nlp.get_pipe(pipe_name).score(examples))
    if component == "classifier":
        scores["accuracy"] = accuracy(examples)
    row = {key: _number(scores.get(key)) for key, _ in METRICS[component]}
    row.update(documents=len(examples), seconds=round(seconds, 2))
    if component == "summarizer":
        row["example"] = {"reference": gold[0].reference._.summary, "predicted": docs[0]._.summary}
    return row


def _number(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| component | metric | untrained | trained |", "|---|---|---:|---:|"]
    by_key = {(r["component"], r["model"]): r for r in rows}
    for component, metrics in METRICS.items():
        if (component, "trained") not in by_key:
            continue
        for key, label in metrics:
            cells = []
            for model in ("untrained", "trained"):
                value = by_key.get((component, model), {}).get(key)
                cells.append("n/a" if value is None else f"{100 * value:.1f}")
            lines.append(f"| {component} | {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--gpu-id", type=int, default=-1)
    for component, train_flag, dev_flag in (("summarizer", "--summary-train", "--summary-dev"),
                                             ("classifier", "--label-train", "--label-dev"),
                                             ("qa", "--qa-train", "--qa-dev")):
        parser.add_argument(f"--{component}", type=Path, help=f"trained {component} pipeline directory")
        parser.add_argument(train_flag, help=f"training file of the {component} (for the untrained baseline's tokenizer)")
        parser.add_argument(dev_flag, help=f"held-out file the {component} is scored on")
    args = parser.parse_args()
    if args.gpu_id >= 0:
        spacy.require_gpu(args.gpu_id)
    data = {"summarizer": (args.summary_train, args.summary_dev), "classifier": (args.label_train, args.label_dev),
            "qa": (args.qa_train, args.qa_dev)}
    rows = []
    for component, (train_path, dev_path) in data.items():
        trained_dir = getattr(args, component)
        if trained_dir is None:
            continue
        if not (train_path and dev_path):
            parser.error(f"--{component} needs its training and dev files too.")
        print(f"Scoring the {component} on {dev_path} ...", flush=True)
        pipelines = {"trained": lambda: spacy.load(trained_dir),
                     "untrained": lambda: untrained_pipeline(trained_dir, train_path, dev_path, args.gpu_id)}
        for model, load in pipelines.items():
            row = {"component": component, "model": model, "path": str(trained_dir) if model == "trained" else None,
                   "dev": dev_path}
            row.update(score(load(), component, dev_path))
            rows.append(row)
    if not rows:
        parser.error("give at least one of --summarizer, --classifier, --qa.")
    table = markdown_table(rows)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf8") as f:
        json.dump({"rows": rows, "table": table}, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"\nMetrics written to {args.output}")


if __name__ == "__main__":
    main()
