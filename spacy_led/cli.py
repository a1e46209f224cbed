"""The ``spacy-led`` command line: argument parsing only; the work is done in ``spacy_led.apply``.

    spacy-led apply MODEL INPUT OUTPUT [options]
    spacy-led apply --checkpoint DIR --task summarize INPUT OUTPUT [options]
    spacy-led apply --ray ADDRESS ... INPUT OUTPUT_DIR [--merge merged.jsonl]
    spacy-led merge OUTPUT_DIR merged.jsonl
    spacy-led train-distributed CONFIG --num-workers N
    spacy-led convert-bart SOURCE DEST [--max-positions 16384] [--attention-window 1024]
    spacy-led export-onnx CHECKPOINT_OR_PIPELINE OUT_DIR
    python -m spacy_led ...

A subcommand is a function that adds its parser to ``COMMANDS``' subparsers and sets ``handler`` (a function
of the parsed arguments returning the exit status); to add one, write such a function and append it to
``COMMANDS``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable, List, Optional, Sequence

from .apply import TASKS, ApplyOptions, UsageError, run_apply
from .apply.options import INPUT_FORMATS, OVERFLOW_CHOICES, QUANTIZE_CHOICES
from .training.command import add_train_distributed_command


def _usage_error(command: str, err: Exception) -> int:
    print(f"spacy-led {command}: error: {err}", file=sys.stderr)
    return 2


def add_apply_command(sub) -> None:
    p = sub.add_parser(
        "apply",
        help="apply a pipeline to a corpus, writing one JSON record per document (resumable)",
        description=(
            "Apply a pipeline to INPUT and write one JSON record per document to OUTPUT. "
            "Usage: spacy-led apply MODEL INPUT OUTPUT, or spacy-led apply --checkpoint DIR|ORG/NAME --task TASK INPUT "
            "OUTPUT. INPUT: a JSONL file, a folder of .txt files, or a .spacy file/folder. Running the same "
            "command again after an interruption resumes it. With --ray, OUTPUT is a directory of part files "
            "(spacy-led merge joins them). Exit status: 0 all documents done, 1 some failed (see the errors "
            "file), 2 usage error, 130 interrupted."
        ),
        usage="spacy-led apply [options] MODEL INPUT OUTPUT\n"
              "       spacy-led apply [options] --checkpoint DIR --task {classify,qa,summarize} INPUT OUTPUT",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="pipeline directory or package name (left out with --checkpoint), input, output")
    p.add_argument("--checkpoint", help="HuggingFace LED directory or hub id (org/name[@revision]): "
                                        "spacy.blank('en') + the --task component")
    p.add_argument("--revision", help="hub revision (branch, tag or commit) of a hub id --checkpoint")
    p.add_argument("--task", choices=sorted(TASKS), help="component to build on --checkpoint")
    p.add_argument("--component-config", metavar="JSON",
                   help='extra component settings with --checkpoint, e.g. \'{"num_beams": 4}\'')
    p.add_argument("--code", metavar="PATH.py", help="Python file registering custom components of MODEL")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default=None,
                   help="jsonl, txt (a folder of .txt) or spacy (DocBin); default: from the input's name")
    p.add_argument("--text-key", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--id-key", default="id", help="JSONL field holding the id (default id: the line number)")
    p.add_argument("--question", action="append", dest="questions", metavar="TEXT",
                   help="QA question, repeatable (a JSONL record's 'questions' field takes precedence)")
    p.add_argument("--batch-size", type=int, default=32, help="documents per batch and per durable write (default: 32)")
    p.add_argument("--batch-token-budget", type=int, default=None,
                   help="padded tokens per model batch (the components' batch_token_budget)")
    p.add_argument("--overflow", choices=OVERFLOW_CHOICES, default=None,
                   help="long-document handling of the components (default: theirs)")
    p.add_argument("--max-length", type=int, default=None, help="model input limit of the components")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                   help="int8: run the components' Linear layers with dynamic int8 quantization (CPU; faster, "
                        "slightly different outputs; default: the pipeline's own setting)")
    p.add_argument("--n-process", type=int, default=1,
                   help="worker processes (CPU only), or Ray workers with --ray (default: 1)")
    p.add_argument("--gpu-id", type=int, default=-1, help="GPU to run on (spacy.require_gpu); -1: CPU")
    p.add_argument("--errors", default=None,
                   help="errors file (default: OUTPUT.errors.jsonl; with --ray, the merged one: MERGED.errors.jsonl)")
    p.add_argument("--spacy-output", default=None, metavar="PATH.spacy",
                   help="also write a DocBin with the annotations (store_user_data=True); with --ray, DocBin "
                        "parts, merged into PATH by --merge or spacy-led merge")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help='run on a Ray cluster through Ray Data ("auto", an address, or "local" to start one '
                        'here); OUTPUT is then a directory of parts; needs spacy-led[ray]')
    p.add_argument("--part-size", type=int, default=1000, help="--ray: JSONL lines per part (default: 1000)")
    p.add_argument("--merge", default=None, metavar="MERGED.jsonl",
                   help="--ray: once every part is done, merge them into this file (see spacy-led merge)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=lambda args: _run_apply(args, p))


def _run_apply(args, parser: argparse.ArgumentParser) -> int:
    expected = 2 if args.checkpoint else 3
    if len(args.paths) != expected:
        parser.error("expected MODEL INPUT OUTPUT" if expected == 3 else "with --checkpoint, expected INPUT OUTPUT (no MODEL)")
    component_config = {}
    if args.component_config:
        try:
            component_config = json.loads(args.component_config)
        except ValueError:
            component_config = None
        if not isinstance(component_config, dict):
            parser.error("--component-config must be a JSON object")
    options = ApplyOptions(
        input=args.paths[-2], output=args.paths[-1], model=None if args.checkpoint else args.paths[0],
        checkpoint=args.checkpoint, revision=args.revision, task=args.task, component_config=component_config,
        code=args.code,
        input_format=args.input_format, text_key=args.text_key, id_key=args.id_key, questions=args.questions,
        batch_size=args.batch_size, batch_token_budget=args.batch_token_budget, overflow=args.overflow,
        max_length=args.max_length, quantize=args.quantize, n_process=args.n_process, gpu_id=args.gpu_id, errors=args.errors,
        spacy_output=args.spacy_output, ray=args.ray, part_size=args.part_size, merge=args.merge,
        progress=not args.no_progress,
    )
    try:
        result = run_apply(options)
    except UsageError as err:
        return _usage_error("apply", err)
    print(result.summary(), file=sys.stderr)
    return result.exit_code


def add_merge_command(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="join the part files of a `spacy-led apply --ray` run into one JSONL file in input order",
        description="Join the parts listed in OUTPUT_DIR's manifest into MERGED (records in input order), "
                    "their errors into MERGED.errors.jsonl (or --errors), and their DocBin parts into "
                    "--spacy-output. Exit status: 0, 1 if some document failed, 2 usage error.",
    )
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    p.add_argument("merged", metavar="MERGED.jsonl")
    p.add_argument("--errors", default=None, help="merged errors file (default: MERGED.errors.jsonl)")
    p.add_argument("--spacy-output", default=None, metavar="PATH.spacy", help="also merge the DocBin parts")
    p.set_defaults(handler=_run_merge)


def _run_merge(args) -> int:
    from .apply.merge import merge_parts

    try:
        merged = merge_parts(args.output_dir, args.merged, errors=args.errors, spacy_output=args.spacy_output)
    except UsageError as err:
        return _usage_error("merge", err)
    print(merged.summary(), file=sys.stderr)
    return merged.exit_code


def add_convert_bart_command(sub) -> None:
    p = sub.add_parser(
        "convert-bart",
        help="make an LED checkpoint from a BART checkpoint (e.g. facebook/bart-large-cnn) for long documents",
        description="Write DEST, an LED checkpoint (config, safetensors weights, tokenizer, generation settings) "
                    "made from the BART seq2seq checkpoint SOURCE (a directory or hub id) as the LED paper did: "
                    "encoder positions extended to --max-positions by repeating BART's, global attention "
                    "projections copied from the local ones. On inputs up to half the window it computes what "
                    "BART does; positions past BART's 1,024 are untrained until fine-tuned. Exit status: 0 "
                    "written, 1 the source cannot become such an LED (the error says why), 2 usage error.",
    )
    p.add_argument("source", metavar="SOURCE", help="BART checkpoint: a directory or a hub id (org/name[@revision])")
    p.add_argument("dest", metavar="DEST", help="the LED checkpoint directory to write (new or empty)")
    p.add_argument("--max-positions", type=int, default=16384, help="encoder positions of the LED (default: 16384)")
    p.add_argument("--attention-window", type=int, default=1024,
                   help="two-sided local attention window of every encoder layer (default: 1024)")
    p.add_argument("--revision", default=None, help="hub revision of a hub id SOURCE")
    p.set_defaults(handler=_run_convert_bart)


def _run_convert_bart(args) -> int:
    from .modeling.convert_bart import convert_bart_to_led

    try:
        dest = convert_bart_to_led(args.source, args.dest, max_positions=args.max_positions,
                                   attention_window=args.attention_window, revision=args.revision)
    except (FileNotFoundError, ImportError, ValueError) as err:  # ConversionError and CheckpointError included
        print(f"spacy-led convert-bart: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote LED checkpoint {dest} ({args.max_positions} encoder positions, window {args.attention_window})",
          file=sys.stderr)
    return 0


def add_export_onnx_command(sub) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export an LED checkpoint or a pipeline's LED components to ONNX graphs for onnxruntime",
        description="Write the ONNX graphs of SOURCE (encoder; decoder first step and cached step for a "
                    "generating model; the decoder with the QA or classification head otherwise) with their "
                    "config to OUT_DIR. SOURCE is a HuggingFace LED checkpoint (directory or hub id), written to "
                    "OUT_DIR, or a spaCy pipeline directory, whose LED components are written to "
                    "OUT_DIR/<component name> (set a component's runtime = \"onnx\" and onnx_path to it). Needs "
                    "spacy-led[onnx]. Exit status: 0 written, 1 the source cannot be exported (the error says why).",
    )
    p.add_argument("source", metavar="CHECKPOINT_OR_PIPELINE", help="LED checkpoint (directory or hub id) or "
                                                                   "spaCy pipeline directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the export to")
    p.set_defaults(handler=_run_export_onnx)


def _run_export_onnx(args) -> int:
    from .onnx import export_onnx

    try:
        written = export_onnx(args.source, args.out_dir)
    except (FileNotFoundError, ImportError, ValueError) as err:
        print(f"spacy-led export-onnx: error: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote ONNX export {path}", file=sys.stderr)
    return 0


# Each adds one subcommand to the parser (see the module docstring).
COMMANDS: List[Callable] = [add_apply_command, add_merge_command, add_train_distributed_command,
                            add_convert_bart_command, add_export_onnx_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacy-led",
        description="Run spaCy LED pipelines (summarize, classify, answer questions) over corpora, and fine-tune "
                    "their models on several workers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add_command in COMMANDS:
        add_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
