"""``--ray``: Ray Data reads the input, actors process it, the workers write the output.

* Ray Data reads the input (``CorpusParts``, a file-based datasource, so local paths and every URI Ray's
  readers accept work): one row per *part*, i.e. ``--part-size`` lines of a JSONL file, one ``.txt`` file, or
  one ``.spacy`` file. Parts already in the manifest are not read again.
* ``PartWorker`` actors (``--n-process`` of them) load the pipeline once and turn each part into records with
  the same ``Engine`` as a local run, then write the part's files themselves (see ``parts``).
* The driver sees only one small summary row per part: it appends it to the manifest and updates the progress
  bar, so its memory does not grow with the corpus (``benchmarks/bench_ray.py``).

A worker killed by the OS is restarted by Ray and its part redone (parts are written whole, atomically); a
document that fails becomes an error record in its part; the driver killed and started again skips the parts in
the manifest. ``spacy-led merge`` (or ``--merge``) joins the parts in input order.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .engine import Engine, pending, release_memory
from .executors import Executor
from .options import ApplyOptions, UsageError
from .parts import COMPLETE, Manifest, order_key, part_name, write_part
from .pipeline import load_pipeline
from .readers import JSONL_SUFFIXES, Item, docbin_items, parse_jsonl_line, text_file_item
from .report import Progress, Result

_SUMMARY_FIELDS = ("part", "source", "key", "documents", "failed", "tokens")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise UsageError(f'--ray needs Ray Data, which is not installed ({err}): pip install "spacy-led[ray]"') from err
    return ray


def input_format(location: str, given: Optional[str]) -> str:
    """jsonl / txt / spacy from ``--input-format`` or the input's name (a local folder is looked into)."""
    if given:
        return given
    name = location.rstrip("/")
    if name.endswith(".spacy"):
        return "spacy"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if "://" not in location:
        from .readers import input_kind

        return input_kind(Path(location))
    raise UsageError(f"cannot tell the format of {location!r} from its name: give --input-format jsonl, txt or spacy.")


def connect(ray, address: str) -> None:
    """Join the cluster at ``address`` ("auto", "host:port", "ray://host:port") or start one ("local"). An
    address nobody answers at is a usage error at once, not a long wait inside Ray."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if address not in ("auto", "local") and port.isdigit():
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except OSError as err:
            raise UsageError(f"--ray {address}: no Ray cluster answers there ({err}). Start one with "
                             f"`ray start --head`, give its address, or use --ray local.") from err
    if ray.is_initialized():  # a program that connected already (tests, notebooks) keeps its connection
        return
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 - any failure to join is the user's address or cluster
        raise UsageError(f"--ray {address}: cannot connect to or start Ray: {err}") from err


def _corpus_parts_class():
    """``CorpusParts`` subclasses Ray's ``FileBasedDatasource``, so it is built only once Ray is imported."""
    import pyarrow as pa
    from ray.data.datasource import FileBasedDatasource

    class CorpusParts(FileBasedDatasource):
        """One row per part: part (name), source (file relative to the input), key (merge order), first_line,
        data (the part's bytes). The reading tasks split files into parts; nothing is parsed here."""

        def __init__(self, location: str, kind: str, part_size: int, skip: frozenset):
            extensions = None if kind == "jsonl" else [kind]
            super().__init__(location, file_extensions=extensions)
            self.kind = kind
            self.part_size = part_size
            self.skip = skip
            root = location.split("://", 1)[1] if "://" in location else os.path.abspath(location)
            self.root = root.rstrip("/")

        def _source(self, path: str) -> str:
            if path != self.root and path.startswith(self.root + "/"):
                return path[len(self.root) + 1:]
            return path.rsplit("/", 1)[-1]

        def _row(self, source: str, index: int, first_line: int, data: bytes):
            return pa.table({
                "part": [part_name(source, index)], "source": [source], "key": [_json(order_key(source, index))],
                "first_line": pa.array([first_line], pa.int64()), "data": pa.array([data], pa.large_binary()),
            })

        def _read_stream(self, f, path: str) -> Iterator[Any]:
            source = self._source(path)
            if self.kind != "jsonl":
                if part_name(source, 0) not in self.skip:
                    yield self._row(source, 0, 0, f.readall())
                return
            for index, (first_line, lines) in enumerate(_line_groups(f, self.part_size)):
                if part_name(source, index) not in self.skip:
                    yield self._row(source, index, first_line, b"".join(lines))

    return CorpusParts


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def _line_groups(f, size: int, chunk_bytes: int = 1 << 20) -> Iterator[tuple]:
    """(number of the first line, ``size`` raw lines) from a binary stream, reading ``chunk_bytes`` at a time."""
    lines: List[bytes] = []
    first = 1
    rest = b""
    while True:
        chunk = f.read(chunk_bytes)
        if not chunk:
            break
        pieces = (rest + chunk).split(b"\n")
        rest = pieces.pop()
        for piece in pieces:
            lines.append(piece + b"\n")
            if len(lines) == size:
                yield first, lines
                first += size
                lines = []
    if rest:
        lines.append(rest)
    if lines:
        yield first, lines


class PartWorker:
    """Ray Data actor: loads the pipeline once, then turns whole parts into part files."""

    def __init__(self, options: Dict[str, Any], out_dir: str):
        self.options = ApplyOptions(**options)
        self.nlp = load_pipeline(self.options, gpu_id=0 if self.options.gpu_id >= 0 else -1)
        self.engine = Engine(self.nlp, self.options.questions)
        self.out_dir = Path(out_dir)
        self.kind = input_format(self.options.input, self.options.input_format)

    def _items(self, source: str, first_line: int, data: bytes) -> Iterator[Item]:
        if self.kind == "txt":
            yield text_file_item(source, data)
        elif self.kind == "spacy":
            yield from docbin_items(source, data, self.nlp.vocab)
        else:
            for number, raw in enumerate(data.splitlines(keepends=True), first_line):
                item = parse_jsonl_line(raw, number, self.options.text_key, self.options.id_key)
                if item is not None:
                    yield item

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        out: Dict[str, List[Any]] = {name: [] for name in _SUMMARY_FIELDS}
        rows = zip(batch["part"], batch["source"], batch["key"], batch["first_line"], batch["data"], strict=True)
        for part, source, key, first_line, data in rows:
            items = pending(self._items(str(source), int(first_line), bytes(data)))
            outcomes = list(self.engine.run(items, self.options.batch_size))
            write_part(self.out_dir, str(part), outcomes, keep_docs=bool(self.options.spacy_output))
            failed = sum(o.error is not None for o in outcomes)
            for name, value in (("part", str(part)), ("source", str(source)), ("key", str(key)),
                                ("documents", len(outcomes) - failed), ("failed", failed),
                                ("tokens", sum(o.tokens for o in outcomes))):
                out[name].append(value)
            del outcomes
            release_memory()
        return out


class RayExecutor(Executor):
    """OUTPUT is a directory of parts (see ``parts``); ``n_process`` Ray actors (1 CPU each, or 1 GPU each
    with ``gpu_id`` >= 0)."""

    def run(self, options: ApplyOptions, nlp=None) -> Result:
        import json

        options.check()
        ray = import_ray()
        out_dir = Path(options.output)
        if out_dir.is_file():
            raise UsageError(f"output {options.output!r} is a file; with --ray, OUTPUT is a directory of parts.")
        if "://" not in options.input and not Path(options.input).exists():
            raise UsageError(f"input {options.input!r} does not exist.")
        kind = input_format(options.input, options.input_format)
        _check_model(options)
        connect(ray, options.ray)
        manifest = Manifest(out_dir)
        (out_dir / COMPLETE).unlink(missing_ok=True)
        result = Result(output=str(out_dir), errors=str(out_dir / "parts" / "*.errors.jsonl"))
        result.skipped = sum(e["documents"] + e["failed"] for e in manifest.entries.values())
        result.failed_before = sum(e["failed"] for e in manifest.entries.values())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        use_gpu = options.gpu_id >= 0
        source = _corpus_parts_class()(options.input, kind, options.part_size, frozenset(manifest.done))
        # Reading is I/O: its tasks take no CPU slot, or actors holding every CPU would starve the reads that feed
        # them (a 2-CPU cluster with 2 workers would wait forever).
        dataset = ray.data.read_datasource(source, num_cpus=0, concurrency=options.n_process).map_batches(
            PartWorker,
            fn_constructor_kwargs={"options": options.to_dict(), "out_dir": str(out_dir.resolve())},
            batch_size=1, batch_format="numpy", concurrency=options.n_process,
            num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0,
        )
        progress = Progress(None, options.progress)
        start = time.perf_counter()
        try:
            for row in dataset.iter_rows():
                entry = {name: row[name] for name in _SUMMARY_FIELDS}
                entry["key"] = json.loads(entry["key"])
                for name in ("documents", "failed", "tokens"):
                    entry[name] = int(entry[name])
                manifest.add(entry)
                result.done += entry["documents"]
                result.failed += entry["failed"]
                result.tokens += entry["tokens"]
                progress.update(entry["documents"] + entry["failed"], entry["tokens"])
        except KeyboardInterrupt:
            result.interrupted = True
        except Exception as err:  # noqa: BLE001 - a part failed outside any document (its workers are retried
            # by Ray; this is what is left, e.g. a pipeline the workers cannot load): the finished parts stay
            result.stopped = f"{type(err).__name__}: {err}"
        finally:
            progress.close()
            manifest.close()
            result.seconds = time.perf_counter() - start
        if not (result.interrupted or result.stopped):
            manifest.mark_complete()
            if options.merge:
                from .merge import merge_parts

                merged = merge_parts(str(out_dir), options.merge, errors=options.errors,
                                     spacy_output=options.spacy_output)
                result.output = f"{out_dir} (merged: {merged.output})"
                result.errors = merged.errors
        return result


def _check_model(options: ApplyOptions) -> None:
    """The pipeline is loaded by the workers; here only what can be checked without loading it."""
    from spacy.util import is_package

    if options.checkpoint and not Path(options.checkpoint).is_dir():
        raise UsageError(f"checkpoint {options.checkpoint!r} is not a directory (a HuggingFace LED download).")
    if options.model and not is_package(options.model) and not (Path(options.model) / "config.cfg").is_file():
        raise UsageError(f"cannot load pipeline {options.model!r}: not a pipeline directory (with config.cfg) "
                         f"or an installed package.")
    if options.code and not Path(options.code).is_file():
        raise UsageError(f"--code {options.code!r} is not a file.")
