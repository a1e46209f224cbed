#!/usr/bin/env python
"""The three components on a GPU (``spacy.require_gpu()``) give what they give on the CPU, and train there.

Two steps, because the GPU machine may lack the test fixtures' tools (transformers, a tokenizer trainer):

``build DIR`` (on any machine, with the ``[test]`` extras): tiny random checkpoints (init_std 0.3, so that
outputs depend on the input) for ``led_summarizer`` (2 beams), ``led_classifier`` and ``led_qa`` (two fixed
questions), the tests' BPE tokenizer beside each; one pipeline with all three, saved with ``nlp.to_disk`` to
``DIR/pipeline``, and its CPU outputs on the tests' sample texts (one of them three times the long text, so it
runs over several windows) in ``DIR/cpu_outputs.json``.

``check DIR`` (on the GPU machine): ``spacy.require_gpu()``, ``spacy.load`` of that pipeline (every module must
sit on the GPU), ``nlp.pipe`` over the same texts: summaries and answer spans identical, categories within
1e-4 of the CPU's; then five ``nlp.update`` steps of the classifier on the GPU (finite losses, every parameter
updated and still on the GPU; dropout draws differ between devices, so the losses are not compared).
Exit status 1 if any of that fails.

    PYTHONPATH=. python benchmarks/check_gpu_pipeline.py build /tmp/gpu-check
    PYTHONPATH=. python benchmarks/check_gpu_pipeline.py check /tmp/gpu-check      # where a GPU is
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["Who signed first?", "Where was the meeting?"]
LABELS = {0: "science", 1: "sports", 2: "law"}


def _outputs(docs) -> list:
    return [{"summary": doc._.summary, "cats": doc.cats,
             "answers": {q: None if s is None else [s.start_char, s.end_char] for q, s in doc._.answers.items()}}
            for doc in docs]


def build(root: Path) -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    import spacy
    import torch
    import transformers
    from conftest import LONG_TEXT, PIPE_SHAPE, SAMPLE_TEXTS, make_pipeline_checkpoint
    from tokenizer_fixture import make_tokenizer_dir

    from spacy_led.modeling import LEDConfig, LEDForSequenceClassification

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_pipeline_checkpoint(transformers, "LEDForConditionalGeneration", root / "sum", init_std=0.3)
    make_pipeline_checkpoint(transformers, "LEDForQuestionAnswering", root / "qa", seed=3, init_std=0.3)
    torch.manual_seed(4)
    config = LEDConfig(**{**PIPE_SHAPE, "init_std": 0.3}, id2label=LABELS)
    LEDForSequenceClassification(config).eval().save_pretrained(root / "cls")
    make_tokenizer_dir(root / "cls", vocab_size=PIPE_SHAPE["vocab_size"])
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(root / "sum"), "num_beams": 2,
                                           "max_summary_length": 12})
    nlp.add_pipe("led_classifier", config={"checkpoint": str(root / "cls")})
    nlp.add_pipe("led_qa", config={"checkpoint": str(root / "qa"), "no_answer_threshold": None,
                                   "questions": QUESTIONS})
    texts = [*SAMPLE_TEXTS, LONG_TEXT, LONG_TEXT * 3]
    outputs = _outputs(nlp.pipe(texts))
    nlp.to_disk(root / "pipeline")  # holds the weights: the checkpoints are no longer needed
    for name in ("sum", "qa", "cls"):
        shutil.rmtree(root / name)
    (root / "cpu_outputs.json").write_text(json.dumps({"texts": texts, "outputs": outputs}))
    print(f"saved {root / 'pipeline'} and the CPU outputs of {len(texts)} texts")
    return 0


def check(root: Path) -> int:
    import spacy
    import torch
    from spacy.training import Example

    import spacy_led.pipes  # noqa: F401  (the factories, also where spacy-led runs from a checkout, uninstalled)

    print("spacy.require_gpu():", spacy.require_gpu())
    data = json.loads((root / "cpu_outputs.json").read_text())
    nlp = spacy.load(root / "pipeline")
    failures = 0
    for name in ("led_summarizer", "led_classifier", "led_qa"):
        device = nlp.get_pipe(name).module.device
        print(f"{name}: module on {device}")
        failures += device.type != "cuda"
    for got, ref in zip(_outputs(nlp.pipe(data["texts"])), data["outputs"], strict=True):
        cat_diff = max(abs(got["cats"][label] - value) for label, value in ref["cats"].items())
        same = (got["summary"] == ref["summary"] and got["answers"] == ref["answers"]
                and set(got["cats"]) == set(ref["cats"]) and cat_diff < 1e-4)
        failures += not same
        print(f"{'same as on the CPU' if same else 'DIFFERENT'}: summary {got['summary'][:24]!r}, "
              f"answers {got['answers']}, cats max diff {cat_diff:.1e}")

    labels = list(LABELS.values())
    examples = [Example.from_dict(nlp.make_doc(text), {"cats": {label: float(i % 3 == j)
                                                                for j, label in enumerate(labels)}})
                for i, text in enumerate(data["texts"])]
    module = nlp.get_pipe("led_classifier").module
    before = [p.detach().clone() for p in module.parameters()]
    optimizer = nlp.resume_training()
    losses = []
    with nlp.select_pipes(enable=["led_classifier"]):
        for _ in range(5):
            step = {}
            nlp.update(examples, sgd=optimizer, losses=step)
            losses.append(step["led_classifier"])
    after = list(module.parameters())
    unchanged = sum(torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))
    on_gpu = all(p.device.type == "cuda" for p in after)
    print(f"classifier updates on the GPU: losses {[round(x, 4) for x in losses]}, {len(after) - unchanged} of "
          f"{len(after)} parameters updated, all on the GPU: {on_gpu}")
    failures += not all(math.isfinite(x) for x in losses) or unchanged > 0 or not on_gpu
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "check"])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    return build(args.dir) if args.step == "build" else check(args.dir)


if __name__ == "__main__":
    sys.exit(main())
