#!/usr/bin/env python
"""What ``nlp.pipe`` costs beyond the model: the components against the bare model on the same inputs.

Documents: ``--docs`` (20) texts of seeded random English-like sentences, each cut to a length drawn between
``--min-pieces`` and ``--max-pieces`` (2,000-6,000) BPE pieces of the pipeline's tokenizer.

Per component (``led_summarizer``: greedy, exactly ``--new-tokens`` tokens per document; ``led_classifier``;
``led_qa`` with one question):

    pipe:  ``list(nlp.pipe(texts))``: everything a user pays: spaCy's tokenizer (``make_doc``), the
           global-attention strategy, BPE tokenization with character offsets, the global mask of the pieces,
           windows, length-sorted batches under the token budget, padding, the model, the outputs back on the
           Docs.
    bare:  the model alone, called directly on the very batches the pipe runs (made once beforehand through
           the component's own windows, ``batches`` and ``padded``): ``generate`` with the component's settings,
           or the module's forward.
    Each is run once untimed, then ``--repeats`` times alternating which goes first; the medians (and the best)
    are printed with the overhead ``pipe / bare - 1`` (the goal: at most 10%), in wall time and in the process's
    CPU time (all threads; on a machine shared with other jobs, CPU time is less disturbed by them). The bare run's outputs are checked
    to be the pipe's (the same summaries), so both did the same work.

Model: random weights (init_std 0.3, so that outputs depend on the input) of ``--shape``: ``small`` (d_model 128,
2 + 2 layers, 4 heads, ffn 512, window 128: a cheap model, so the pipe's own costs weigh most) or ``base``
(led-base-16384's width and depth, window 1024); 8,192 encoder positions, so every document is one window. The
tokenizer is a byte-level BPE of ``--vocab-size`` pieces trained on the generated text.

Example (repository root)::

    PYTHONPATH=. python benchmarks/bench_pipe.py                      # small model, ~3 minutes on 2 busy cores
    PYTHONPATH=. python benchmarks/bench_pipe.py --shape base --repeats 1    # led-base width: several GB, run alone
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_modeling import LED_BASE_SHAPE  # noqa: E402

WORDS = ("the court contract parties agreed terms dispute witnesses meeting payment judge record clerk signed "
         "model reads whole document decoder writes short summary long attention sparse window global token "
         "question answer evidence report company market growth quarter revenue policy climate energy city "
         "river mountain history science method result study patient trial effect data analysis").split()
SHAPES = {
    "small": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, attention_window=128),
    "base": {k: LED_BASE_SHAPE[k] for k in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                                            "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                                            "attention_window")},
}
COMPONENTS = {"summarize": "led_summarizer", "classify": "led_classifier", "qa": "led_qa"}
QUESTION = "Who signed the contract?"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--tasks", nargs="+", choices=sorted(COMPONENTS), default=["summarize", "classify"])
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--min-pieces", type=int, default=2000)
    parser.add_argument("--max-pieces", type=int, default=6000)
    parser.add_argument("--new-tokens", type=int, default=32, help="summary tokens per document (default 32)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def make_texts(n: int, seed: int = 0) -> List[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = []
        for _ in range(1200):  # ~30,000 characters: more than 6,000 pieces; cut to length later
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 20))]
            sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
        texts.append(" ".join(sentences))
    return texts


def make_checkpoint(directory: Path, task: str, shape: str, texts: List[str], vocab_size: int) -> Path:
    import torch

    from spacy_led.modeling import (LEDConfig, LEDForConditionalGeneration, LEDForQuestionAnswering,
                                    LEDForSequenceClassification)
    from spacy_led.tokenizer import LEDTokenizer

    tokenizer = LEDTokenizer.train(texts, vocab_size)
    config = dict(SHAPES[shape], vocab_size=tokenizer.vocab_size, max_encoder_position_embeddings=8192,
                  max_decoder_position_embeddings=1024, init_std=0.3, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    if task == "classify":
        model = LEDForSequenceClassification(LEDConfig(**config, id2label={0: "a", 1: "b", 2: "c"}))
    elif task == "qa":
        model = LEDForQuestionAnswering(LEDConfig(**config))
    else:
        model = LEDForConditionalGeneration(LEDConfig(**config))
    path = directory / task
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def cut_texts(tokenizer, texts: List[str], low: int, high: int, seed: int = 1) -> List[str]:
    """Each text cut at the end of the piece whose count was drawn in [low, high]."""
    rng = random.Random(seed)
    cut = []
    for text in texts:
        offsets = tokenizer.encode_with_offsets(text, add_special_tokens=False).offsets
        pieces = rng.randint(low, high)
        if len(offsets) < pieces:
            raise ValueError(f"a generated text has only {len(offsets)} pieces; {pieces} wanted.")
        cut.append(text[: offsets[pieces - 1][1]])
    return cut


def bare_model_call(pipe, task: str) -> Callable[[Dict[str, Any]], Any]:
    """The model on one padded batch, as the component calls it."""
    module = pipe.inference_module
    if task == "summarize":
        kwargs = dict(pipe.generation_kwargs(), num_return_sequences=1, return_dict_in_generate=True)
        return lambda tensors: module.generate(**tensors, **kwargs)
    return lambda tensors: module(**tensors)


def time_alternating(calls: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, Dict[str, List[float]]]:
    """Wall and CPU seconds of each call: once untimed, then ``repeats`` rounds alternating which goes first."""
    times = {name: {"wall": [], "cpu": []} for name in calls}
    for call in calls.values():
        call()
    order = list(calls)
    for round_ in range(repeats):
        for name in order if round_ % 2 == 0 else order[::-1]:
            wall, cpu = time.perf_counter(), time.process_time()
            calls[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def bench_task(task: str, checkpoint: Path, texts_by_pieces: List[str], args) -> None:
    import spacy
    import torch

    from spacy_led.pipes.windows import batches, padded

    config: Dict[str, Any] = {"checkpoint": str(checkpoint)}
    if task == "summarize":
        config.update(num_beams=1, max_new_tokens=args.new_tokens, min_summary_length=args.new_tokens + 1)
    if task == "qa":
        config.update(questions=[QUESTION])
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(COMPONENTS[task], config=config)
    pipe.load()
    texts = texts_by_pieces

    # The bare model's inputs: the pipe's own windows and batches, made once, outside the timing.
    start = time.process_time()
    docs = [nlp.make_doc(text) for text in texts]
    windows = [w for i, doc in enumerate(docs) for w in pipe._doc_windows(i, doc)]
    prepared = [(batch, padded(batch, pipe.tokenizer.pad_token_id))
                for batch in batches(windows, int(pipe.cfg["batch_token_budget"]))]
    preparation = time.process_time() - start
    model_call = bare_model_call(pipe, task)
    bare_outputs: List[Any] = []

    def bare():
        bare_outputs.clear()
        with torch.no_grad():
            for _, tensors in prepared:
                bare_outputs.append(model_call(tensors))

    piped: List[Any] = []

    def run_pipe():
        piped[:] = list(nlp.pipe(texts))

    times = time_alternating({"pipe": run_pipe, "bare": bare}, args.repeats)
    if task == "summarize":  # the same work: the bare run's summaries are the pipe's
        by_window = {}
        for (batch, _), output in zip(prepared, bare_outputs, strict=True):
            texts_out = pipe.tokenizer.batch_decode(output.sequences.tolist(), skip_special_tokens=True)
            for window, text in zip(batch, texts_out, strict=True):
                by_window[window.doc_index] = text.strip()
        if [by_window[i] for i in range(len(docs))] != [doc._.summary for doc in piped]:
            raise AssertionError("the bare model's summaries differ from the pipe's: not the same work")
    start = time.process_time()
    _ = [nlp.make_doc(t) for t in texts]
    make_doc = time.process_time() - start
    sizes = [len(b) for b, _ in prepared]
    print(f"{COMPONENTS[task]}: {len(windows)} windows in {len(prepared)} batches of {sizes} windows; spaCy's "
          f"make_doc (inside pipe) {make_doc:.2f} s CPU; all the inputs (make_doc to padded batches) "
          f"{preparation:.2f} s CPU")
    for clock in ("wall", "cpu"):
        pipe_t, bare_t = statistics.median(times["pipe"][clock]), statistics.median(times["bare"][clock])
        best_pipe, best_bare = min(times["pipe"][clock]), min(times["bare"][clock])
        print(f"  {clock:<4}  pipe {pipe_t:7.2f} s (best {best_pipe:6.2f})   bare model {bare_t:7.2f} s "
              f"(best {best_bare:6.2f})   overhead {pipe_t / bare_t - 1:+.1%} (best {best_pipe / best_bare - 1:+.1%})")


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from spacy_led.tokenizer import LEDTokenizer

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, shape {args.shape}, load average {_loadavg()}")
    raw = make_texts(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {task: make_checkpoint(Path(tmp), task, args.shape, raw, args.vocab_size) for task in args.tasks}
        tokenizer = LEDTokenizer.from_pretrained(next(iter(checkpoints.values())))
        texts = cut_texts(tokenizer, raw, args.min_pieces, args.max_pieces)
        pieces = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        print(f"{len(texts)} documents of {min(pieces)}-{max(pieces)} pieces ({sum(pieces)} in all)")
        for task in args.tasks:
            bench_task(task, checkpoints[task], texts, args)
    print(f"load average at the end {_loadavg()}")


if __name__ == "__main__":
    main()
