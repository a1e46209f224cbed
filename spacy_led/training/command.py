"""``spacy-led train-distributed CONFIG --num-workers N``: the command line of distributed fine-tuning.

Exit status: 0 trained (``checkpoint/`` and ``pipeline/`` written), 1 training failed (after Ray Train's
retries), 2 a config, corpus or installation problem found before training started.
"""
from __future__ import annotations

import argparse
import logging
import sys

HELP = "fine-tune an LED component on N Ray Train workers (needs spacy-led[train])"
DESCRIPTION = (
    "Fine-tune led_summarizer / led_classifier / led_qa with PyTorch DDP on N Ray Train workers (CPU or GPU), "
    "from the corpora the components read, and write OUTPUT/checkpoint (a HuggingFace LED directory the "
    "components load through `checkpoint`) and OUTPUT/pipeline (a spaCy pipeline). A worker that fails is "
    "restarted from the last checkpoint. CONFIG (.cfg, .json or .yaml) is described in "
    "spacy_led/training/config.py."
)


def add_train_distributed_command(subparsers) -> None:
    p = subparsers.add_parser("train-distributed", help=HELP, description=DESCRIPTION)
    p.add_argument("config", metavar="CONFIG", help="training config: .cfg, .json or .yaml")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (default: 1)")
    p.add_argument("--output", default=None, metavar="DIR", help="output directory (default: the config's output.dir)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="Ray cluster to join (default: the one in RAY_ADDRESS, else a new local one)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (training.use_gpu)")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..corpus import CorpusError
    from .config import TrainingConfigError, load_training_config
    from .distributed import train_distributed

    logging.getLogger("spacy_led").setLevel(logging.INFO)  # the plan and rank 0's loss at every step
    overrides = {}
    if args.output:
        overrides["output.dir"] = args.output
    if args.gpu:
        overrides["training.use_gpu"] = True
    try:
        config = load_training_config(args.config, overrides)
        result = train_distributed(config, args.num_workers, ray_address=args.ray)
    except (TrainingConfigError, CorpusError, ImportError) as err:
        print(f"spacy-led train-distributed: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Ray Train's error after its retries: the worker's traceback is in its log
        print(f"spacy-led train-distributed: training failed: {err}", file=sys.stderr)
        return 1
    print(f"trained {result.steps} step(s), last loss {result.metrics['loss']:.4f}\n"
          f"checkpoint: {result.checkpoint}\npipeline: {result.pipeline}", file=sys.stderr)
    return 0
