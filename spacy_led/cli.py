"""``spacy-led apply``: run an LED pipeline over a corpus, resumably, writing one JSON record per document.

    spacy-led apply MODEL INPUT OUTPUT [options]
    spacy-led apply --checkpoint DIR --task summarize INPUT OUTPUT [options]
    python -m spacy_led apply ...

Nothing is lost and nothing is written twice:

* every record is one complete line; the records of a batch are written in input order with one ``write``,
  then flushed and fsynced, so a kill leaves at most a partial *last* line, which the next run truncates;
* the next run with the same command reads the ids already in OUTPUT and in the errors file, skips those
  documents and continues, so the final OUTPUT equals that of an uninterrupted run (same records, same order);
* a document that cannot be read or processed (malformed JSONL line, undecodable bytes, too long under
  ``overflow="error"``, an exception in a component, a crashed worker) goes to the errors file with its id,
  position and reason, and the run goes on. Exit status: 0 all done, 1 some document failed, 2 usage error,
  130 interrupted (run the same command again to resume).

Read errors travel through the pipeline as empty placeholder Docs, so errors and results are written in the
same, input, order whatever ``--n-process`` is.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

TASKS = {"summarize": "led_summarizer", "classify": "led_classifier", "qa": "led_qa"}
ERROR_KEY = "spacy_led.cli.error"  # doc.user_data: why this Doc failed (set by the error handler)
READ_ERROR_KEY = "spacy_led.cli.read_error"  # doc.user_data: the input could not be read (placeholder Doc)
ID_KEY = "spacy_led.id"  # doc.user_data: the document's id (kept in --spacy-output)
SEQ_KEY = "spacy_led.cli.seq"  # doc.user_data: position in this run's stream (finds Docs a worker lost)

logger = logging.getLogger("spacy_led")


class UsageError(Exception):
    """A bad command line or unusable input/output path: exit status 2."""


# ---- input -----------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One input document: its id, where it is in the input, and its text (or Doc), or why it can't be read."""

    id: Any
    position: str
    text: Optional[str] = None
    doc: Any = None  # a Doc from a .spacy file
    questions: Optional[List[str]] = None
    error: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


def id_key(value: Any) -> str:
    """A hashable, type-preserving key of an id (1 and "1" are different ids)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def input_kind(path: Path) -> str:
    if not path.exists():
        raise UsageError(f"input {str(path)!r} does not exist.")
    if path.is_dir():
        if any(path.rglob("*.spacy")) and not any(path.rglob("*.txt")):
            return "spacy"
        return "txt"
    if path.suffix == ".spacy":
        return "spacy"
    if path.suffix in (".jsonl", ".json", ".ndjson") or path.is_file():
        return "jsonl"
    raise UsageError(f"input {str(path)!r} is not a JSONL file, a folder of .txt files or .spacy files.")


def _as_questions(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(q, str) for q in value):
        return list(value)
    raise ValueError("'questions' must be a string or a list of strings")


def read_jsonl(path: Path, text_key: str = "text", id_key_name: str = "id") -> Iterator[Item]:
    """One Item per non-blank line; id = the ``id_key_name`` field, else the 1-based line number."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            position = f"line {number}"
            try:
                line = raw.decode("utf8")
            except UnicodeDecodeError as err:
                yield Item(number, position, error=f"line is not valid UTF-8: {err}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield Item(number, position, error=f"malformed JSON: {err}")
                continue
            if not isinstance(record, dict):
                yield Item(number, position, error=f"expected a JSON object, got {type(record).__name__}")
                continue
            doc_id = record.get(id_key_name, number)
            if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
                yield Item(number, position, error=f"'{id_key_name}' must be a string or an integer, got {doc_id!r}")
                continue
            text = record.get(text_key)
            if not isinstance(text, str):
                reason = f"no '{text_key}' field" if text is None else f"'{text_key}' is not a string"
                yield Item(doc_id, position, error=reason)
                continue
            questions = None
            if record.get("questions") is not None:
                try:
                    questions = _as_questions(record["questions"])
                except ValueError as err:
                    yield Item(doc_id, position, error=str(err))
                    continue
            yield Item(doc_id, position, text=text, questions=questions)


def _files(path: Path, suffix: str) -> List[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())


def read_txt_folder(path: Path) -> Iterator[Item]:
    """One Item per ``.txt`` file (sorted, recursive); id = the path relative to the folder."""
    for file in _files(path, ".txt"):
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        try:
            text = file.read_bytes().decode("utf8")
        except UnicodeDecodeError as err:
            yield Item(name, name, error=f"file is not valid UTF-8: {err}")
            continue
        except OSError as err:
            yield Item(name, name, error=f"cannot read file: {err}")
            continue
        yield Item(name, name, text=text)


def read_spacy(path: Path, vocab) -> Iterator[Item]:
    """One Item per Doc of each ``.spacy`` file (sorted); id = ``file:index``."""
    from spacy.tokens import DocBin

    for file in _files(path, ".spacy"):
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        try:
            docs = list(DocBin().from_disk(file).get_docs(vocab))
        except Exception as err:  # noqa: BLE001 - a broken file is reported, the others still run
            yield Item(f"{name}:*", name, error=f"cannot read DocBin: {type(err).__name__}: {err}")
            continue
        for index, doc in enumerate(docs):
            doc_id = f"{name}:{index}"
            yield Item(doc_id, doc_id, doc=doc)


def count_input(path: Path, kind: str) -> Optional[int]:
    """The number of documents, for the progress bar (cheap: no parsing)."""
    try:
        if kind == "jsonl":
            with open(path, "rb") as f:
                return sum(1 for line in f if line.strip())
        if kind == "txt":
            return len(_files(path, ".txt"))
        if kind == "spacy":
            from spacy.tokens import DocBin

            return sum(len(DocBin().from_disk(f)) for f in _files(path, ".spacy"))
    except Exception:  # noqa: BLE001 - only the progress bar's total
        return None
    return None


def read_input(path: Path, kind: str, vocab, text_key: str, id_key_name: str) -> Iterator[Item]:
    if kind == "jsonl":
        return read_jsonl(path, text_key, id_key_name)
    if kind == "txt":
        return read_txt_folder(path)
    return read_spacy(path, vocab)


# ---- output files ------------------------------------------------------------------------------------------


def recover_jsonl(path: Path, field_name: str = "id") -> List[dict]:
    """The complete records of a JSONL file written by an earlier run. A trailing partial line (a killed
    write), or anything from the first unreadable line on, is truncated away: those documents are redone."""
    if not path.exists():
        return []
    records = []
    good = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except ValueError:
                break
            if not isinstance(record, dict) or field_name not in record:
                break
            records.append(record)
            good += len(raw)
    if good != path.stat().st_size:
        logger.warning("%s: truncating %d bytes of an incomplete record left by an interrupted run.",
                       path, path.stat().st_size - good)
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return records


class AppendWriter:
    """Appends whole lines and makes them durable: one write per batch, then flush + fsync."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "ab")

    def write(self, records: Sequence[dict]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf8")
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


class DocShards:
    """``--spacy-output``: each batch's Docs go to an atomically written shard beside the target; the shards
    (and an existing target) are merged at the end in the order of OUTPUT, one Doc per id."""

    def __init__(self, target: Path):
        self.target = target
        self.dir = target.with_name(target.name + ".parts")
        self.dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.dir.glob("*.spacy"))
        self.next = int(existing[-1].stem) + 1 if existing else 0

    def write(self, docs: Sequence[Any]) -> None:
        from spacy.tokens import DocBin

        if not docs:
            return
        docbin = DocBin(store_user_data=True, docs=docs)
        final = self.dir / f"{self.next:08d}.spacy"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(docbin.to_bytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.next += 1

    def merge(self, vocab, order: Sequence[str]) -> int:
        from spacy.tokens import DocBin

        by_id: Dict[str, Any] = {}
        sources = ([self.target] if self.target.exists() else []) + sorted(self.dir.glob("*.spacy"))
        for source in sources:
            for doc in DocBin().from_disk(source).get_docs(vocab):
                by_id.setdefault(id_key(doc.user_data.get(ID_KEY)), doc)
        docs = [by_id[k] for k in order if k in by_id]
        out = DocBin(store_user_data=True, docs=docs)
        tmp = self.target.with_name(self.target.name + ".tmp")
        out.to_disk(tmp)
        os.replace(tmp, self.target)
        shutil.rmtree(self.dir, ignore_errors=True)
        return len(docs)


# ---- pipeline ----------------------------------------------------------------------------------------------


def load_pipeline(model: Optional[str], checkpoint: Optional[str] = None, task: Optional[str] = None,
                  component_config: Optional[Dict[str, Any]] = None, gpu_id: int = -1):
    """A saved pipeline / installed package, or spacy.blank("en") + the ``task``'s component on a HF LED
    checkpoint directory."""
    import spacy

    if gpu_id is not None and gpu_id >= 0:
        require_gpu(gpu_id)
    if checkpoint:
        if task not in TASKS:
            raise UsageError(f"--checkpoint needs --task, one of {', '.join(TASKS)}.")
        if not Path(checkpoint).is_dir():
            raise UsageError(f"checkpoint {checkpoint!r} is not a directory (a HuggingFace LED download).")
        nlp = spacy.blank("en")
        nlp.add_pipe(TASKS[task], config={"checkpoint": str(checkpoint), **(component_config or {})})
        return nlp
    if not model:
        raise UsageError("give MODEL (a pipeline directory or package) or --checkpoint DIR --task TASK.")
    try:
        return spacy.load(model)
    except OSError as err:
        raise UsageError(f"cannot load pipeline {model!r}: {err}") from err


def require_gpu(gpu_id: int) -> None:
    import spacy

    try:
        import torch

        has_cuda = torch.cuda.is_available()
        count = torch.cuda.device_count() if has_cuda else 0
    except Exception:  # noqa: BLE001
        has_cuda, count = False, 0
    if not has_cuda:
        raise UsageError(f"--gpu-id {gpu_id}: no CUDA GPU is visible to torch on this machine "
                         f"(torch.cuda.is_available() is False); leave --gpu-id out to run on the CPU.")
    if gpu_id >= count:
        raise UsageError(f"--gpu-id {gpu_id}: only {count} GPU(s) visible (ids 0..{count - 1}).")
    try:
        spacy.require_gpu(gpu_id)
    except Exception as err:  # noqa: BLE001
        raise UsageError(f"--gpu-id {gpu_id}: spacy.require_gpu failed: {err}") from err


def led_pipes(nlp) -> List[Any]:
    from .pipes.base import LEDPipe

    return [pipe for _, pipe in nlp.pipeline if isinstance(pipe, LEDPipe)]


def configure(nlp, batch_token_budget: Optional[int] = None, overflow: Optional[str] = None,
              max_length: Optional[int] = None) -> None:
    from .pipes.base import OVERFLOW_MODES

    if overflow is not None and overflow not in OVERFLOW_MODES:
        raise UsageError(f"--overflow must be one of {OVERFLOW_MODES}.")
    for pipe in led_pipes(nlp):
        if batch_token_budget is not None:
            if batch_token_budget < 1:
                raise UsageError("--batch-token-budget must be positive.")
            pipe.cfg["batch_token_budget"] = int(batch_token_budget)
        if overflow is not None:
            pipe.cfg["overflow"] = overflow
        if max_length is not None:
            pipe.cfg["max_length"] = int(max_length)
    nlp.set_error_handler(mark_failed)


def _load_malloc_trim():
    """glibc's ``malloc_trim``, or None. Batches of varying shapes fragment the C heap: the freed tensors'
    memory stays in the process (RSS grows by ~100 MB per 1,000 mixed-length documents) unless it is handed
    back to the OS after each batch; live memory does not grow (see benchmarks/bench_cli.py)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def mark_failed(name, pipe, docs, err) -> None:
    """spaCy error handler: the Doc is kept (without this component's annotations) and marked as failed."""
    reason = f"{type(err).__name__}: {err}" if name is None else f"{name}: {type(err).__name__}: {err}"
    for doc in docs or ():
        doc.user_data.setdefault(ERROR_KEY, reason)
    if not docs:  # a worker process failed a whole batch (spaCy passes no Docs): remembered for that batch
        _WORKER_ERRORS.append(reason)


_WORKER_ERRORS: List[str] = []


def record_for(doc, nlp_pipes: Sequence[Any]) -> Dict[str, Any]:
    """The JSON record of a processed Doc: its annotations with character offsets."""
    from .pipes.classifier import LEDClassifier
    from .pipes.question_answering import LEDQuestionAnswerer
    from .pipes.summarizer import LEDSummarizer

    record: Dict[str, Any] = {"id": doc.user_data.get(ID_KEY)}
    for pipe in nlp_pipes:
        if isinstance(pipe, LEDSummarizer):
            attr = pipe.cfg.get("summary_attr", "summary")
            record[attr] = getattr(doc._, attr)
        elif isinstance(pipe, LEDClassifier):
            record["cats"] = {k: float(v) for k, v in doc.cats.items()}
            record[pipe.cfg.get("label_attr", "label")] = getattr(doc._, pipe.cfg.get("label_attr", "label"))
        elif isinstance(pipe, LEDQuestionAnswerer):
            answers = []
            for question, span in (doc._.answers or {}).items():
                if span is None:
                    answers.append({"question": question, "text": None, "start_char": None, "end_char": None,
                                    "score": None})
                else:
                    score = span._.answer_score
                    answers.append({"question": question, "text": span.text, "start_char": span.start_char,
                                    "end_char": span.end_char, "score": None if score is None else float(score)})
            record["answers"] = answers
    return record


# ---- the run -----------------------------------------------------------------------------------------------


@dataclass
class Result:
    done: int = 0  # documents written to OUTPUT in this run
    failed: int = 0  # documents written to the errors file in this run
    skipped: int = 0  # already in OUTPUT or the errors file from an earlier run
    failed_before: int = 0  # of the skipped, those in the errors file
    tokens: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    output: str = ""
    errors: str = ""

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.failed_before) else 0

    def summary(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{'Interrupted' if self.interrupted else 'Finished'} in {self.seconds:.1f}s: "
            f"{self.done} documents done ({rate:.1f} docs/s, {self.tokens / max(self.seconds, 1e-9):.0f} tokens/s), "
            f"{self.failed} failed, {self.skipped} skipped (already done in a previous run"
            + (f", {self.failed_before} of them failed" if self.failed_before else "") + ").",
            f"Output: {self.output}",
        ]
        if self.failed or self.failed_before:
            lines.append(f"Some documents FAILED: see {self.errors} (exit status 1).")
        if self.interrupted:
            lines.append("Run the same command again to resume where this run stopped.")
        return "\n".join(lines)


class Progress:
    """tqdm on stderr (spaCy depends on tqdm) with documents/s, tokens/s and the time left."""

    def __init__(self, total: Optional[int], initial: int, enabled: bool):
        self.bar = None
        self.start = time.perf_counter()
        self.docs = 0
        self.tokens = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="doc", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1, desc="spacy-led")

    def update(self, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.0f} tokens/s", refresh=False)
            self.bar.update(docs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prepare_doc(nlp, item: Item, seq: int, questions: Optional[List[str]]):
    from .extensions import ensure_extensions

    if item.error is not None:
        doc = nlp.make_doc("")
        doc.user_data[READ_ERROR_KEY] = item.error
    elif item.doc is not None:
        doc = item.doc
        for key in (ERROR_KEY, READ_ERROR_KEY, SEQ_KEY):
            doc.user_data.pop(key, None)
    else:
        doc = nlp.make_doc(item.text)
    chosen = item.questions if item.questions is not None else questions
    if chosen is not None:
        ensure_extensions()
        doc._.questions = list(chosen)
    doc.user_data[ID_KEY] = item.id
    doc.user_data[SEQ_KEY] = seq
    return doc


def _pending(items: Iterable[Item], done_ids: Set[str], errored: Set[Tuple[str, str]], result: Result,
             failed_ids: Set[str]) -> Iterator[Item]:
    """The Items still to do. A repeated id is an error of its own (ids are how a run resumes)."""
    seen: Dict[str, str] = {}
    for item in items:
        key = id_key(item.id)
        if key in seen:
            if (key, item.position) in errored:
                result.skipped += 1
                result.failed_before += 1
                continue
            yield Item(item.id, item.position, error=f"duplicate id {item.id!r} (first at {seen[key]})")
            continue
        seen[key] = item.position
        if key in done_ids:
            result.skipped += 1
            if key in failed_ids:
                result.failed_before += 1
            continue
        yield item


def apply(
    model: Optional[str],
    input_path: str,
    output_path: str,
    *,
    checkpoint: Optional[str] = None,
    task: Optional[str] = None,
    text_key: str = "text",
    id_key_name: str = "id",
    questions: Optional[List[str]] = None,
    batch_size: int = 32,
    batch_token_budget: Optional[int] = None,
    n_process: int = 1,
    gpu_id: int = -1,
    errors_path: Optional[str] = None,
    spacy_output: Optional[str] = None,
    overflow: Optional[str] = None,
    max_length: Optional[int] = None,
    component_config: Optional[Dict[str, Any]] = None,
    progress: bool = True,
    nlp=None,
) -> Result:
    """Run the pipeline over INPUT, appending to OUTPUT (resuming an earlier run of the same command)."""
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    if n_process < 1:
        raise UsageError("--n-process must be at least 1.")
    if n_process > 1 and gpu_id is not None and gpu_id >= 0:
        raise UsageError("--n-process > 1 runs on the CPU only; use one process with --gpu-id.")
    in_path, out_path = Path(input_path), Path(output_path)
    err_path = Path(errors_path) if errors_path else out_path.with_name(out_path.name + ".errors.jsonl")
    if out_path.is_dir():
        raise UsageError(f"output {output_path!r} is a directory; give a .jsonl file path.")
    kind = input_kind(in_path)
    if nlp is None:
        nlp = load_pipeline(model, checkpoint, task, component_config, gpu_id)
    configure(nlp, batch_token_budget, overflow, max_length)
    pipes = led_pipes(nlp)

    previous = recover_jsonl(out_path)
    previous_errors = recover_jsonl(err_path)
    done_ids = {id_key(r["id"]) for r in previous}
    failed_ids = {id_key(r["id"]) for r in previous_errors}
    errored = {(id_key(r["id"]), r.get("position")) for r in previous_errors}
    order = [id_key(r["id"]) for r in previous]  # OUTPUT's order, for --spacy-output's merge
    done_ids |= failed_ids

    result = Result(output=str(out_path), errors=str(err_path))
    total = count_input(in_path, kind)
    out = AppendWriter(out_path)
    err_out = AppendWriter(err_path)
    shards = DocShards(Path(spacy_output)) if spacy_output else None
    items = _pending(read_input(in_path, kind, nlp.vocab, text_key, id_key_name), done_ids, errored, result,
                     failed_ids)
    sent: Dict[int, Item] = {}

    def docs_in() -> Iterator[Any]:
        for seq, item in enumerate(items):
            sent[seq] = item
            yield _prepare_doc(nlp, item, seq, questions)

    start = time.perf_counter()
    bar = None
    next_seq = 0
    batch_ok: List[Any] = []
    batch_err: List[dict] = []

    def flush() -> None:
        nonlocal batch_ok, batch_err
        if shards is not None:
            shards.write(batch_ok)
        err_out.write(batch_err)
        records = [record_for(doc, pipes) for doc in batch_ok]
        out.write(records)
        order.extend(id_key(r["id"]) for r in records)
        tokens = sum(len(d) for d in batch_ok)
        result.done += len(records)
        result.failed += len(batch_err)
        result.tokens += tokens
        if bar is not None:
            bar.update(len(records) + len(batch_err), tokens)
        batch_ok, batch_err = [], []
        release_memory()

    def fail(item: Item, reason: str) -> None:
        batch_err.append({"id": item.id, "position": item.position, "reason": reason})

    try:
        bar = Progress(None if total is None else max(total - len(done_ids), 0), 0, progress)
        del _WORKER_ERRORS[:]
        for doc in nlp.pipe(docs_in(), batch_size=batch_size, n_process=n_process):
            seq = doc.user_data.pop(SEQ_KEY)
            while next_seq < seq:  # Docs a worker process lost with its batch
                reason = _WORKER_ERRORS[-1] if _WORKER_ERRORS else "lost by a worker process"
                fail(sent.pop(next_seq), reason)
                next_seq += 1
            item = sent.pop(seq)
            next_seq = seq + 1
            if READ_ERROR_KEY in doc.user_data:
                fail(item, doc.user_data[READ_ERROR_KEY])
            elif ERROR_KEY in doc.user_data:
                fail(item, doc.user_data[ERROR_KEY])
            else:
                batch_ok.append(doc)
            if len(batch_ok) + len(batch_err) >= batch_size:
                flush()
        for seq in sorted(sent):
            fail(sent.pop(seq), _WORKER_ERRORS[-1] if _WORKER_ERRORS else "lost by a worker process")
        flush()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if bar is not None:
            bar.close()
        out.close()
        err_out.close()
        result.seconds = time.perf_counter() - start
    if shards is not None and not result.interrupted:
        shards.merge(nlp.vocab, order)
    return result


# ---- Ray ---------------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise UsageError(f'--ray needs Ray Data, which is not installed ({err}): pip install "spacy-led[ray]"') from err
    return ray


class _RayPredictor:
    """Ray Data callable class: the pipeline is loaded once per worker, then each batch of rows is run through
    ``nlp.pipe`` with the same error handling as a local run. Rows in: seq, item (JSON), doc (DocBin bytes of a
    .spacy Doc or empty). Rows out: seq, item, ok, record (JSON), doc (annotated Doc bytes, for --spacy-output)."""

    def __init__(self, load_kwargs: Dict[str, Any], configure_kwargs: Dict[str, Any], questions, keep_docs: bool):
        self.nlp = load_pipeline(**load_kwargs)
        configure(self.nlp, **configure_kwargs)
        self.pipes = led_pipes(self.nlp)
        self.questions = questions
        self.keep_docs = keep_docs

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        from spacy.tokens import Doc

        docs, items = [], []
        for seq, payload, doc_bytes in zip(batch["seq"], batch["item"], batch["doc"]):
            data = json.loads(payload)
            item = Item(data["id"], data["position"], text=data["text"], questions=data["questions"],
                        error=data["error"])
            if doc_bytes is not None and len(doc_bytes):
                item.doc = Doc(self.nlp.vocab).from_bytes(bytes(doc_bytes))
            items.append(payload)
            docs.append(_prepare_doc(self.nlp, item, int(seq), self.questions))
        out: Dict[str, List[Any]] = {"seq": [], "item": [], "ok": [], "record": [], "doc": []}
        for payload, doc in zip(items, self.nlp.pipe(docs, batch_size=max(len(docs), 1))):
            seq = doc.user_data.pop(SEQ_KEY)
            reason = doc.user_data.get(READ_ERROR_KEY) or doc.user_data.get(ERROR_KEY)
            out["seq"].append(seq)
            out["item"].append(payload)
            out["ok"].append(reason is None)
            out["record"].append(json.dumps(record_for(doc, self.pipes) if reason is None else {"reason": reason},
                                            ensure_ascii=False))
            out["doc"].append(doc.to_bytes() if (self.keep_docs and reason is None) else b"")
        release_memory()
        return out


def apply_ray(
    model: Optional[str],
    input_path: str,
    output_path: str,
    *,
    address: str = "local",
    checkpoint: Optional[str] = None,
    task: Optional[str] = None,
    text_key: str = "text",
    id_key_name: str = "id",
    questions: Optional[List[str]] = None,
    batch_size: int = 32,
    batch_token_budget: Optional[int] = None,
    n_process: int = 1,
    gpu_id: int = -1,
    errors_path: Optional[str] = None,
    spacy_output: Optional[str] = None,
    overflow: Optional[str] = None,
    max_length: Optional[int] = None,
    component_config: Optional[Dict[str, Any]] = None,
    progress: bool = True,
) -> Result:
    """The same job as ``apply`` through Ray Data: the input is read here (the same readers, ids and resume
    rule), ``map_batches`` runs a pool of ``n_process`` workers (``--n-process``; GPUs with ``--gpu-id``), each
    loading the pipeline once, and the results come back in input order (``preserve_order``) to be written
    here exactly like a local run: same OUTPUT, same errors file, same resumability."""
    ray = _import_ray()
    from spacy.tokens import Doc

    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")
    in_path, out_path = Path(input_path), Path(output_path)
    err_path = Path(errors_path) if errors_path else out_path.with_name(out_path.name + ".errors.jsonl")
    kind = input_kind(in_path)
    load_kwargs = dict(model=model, checkpoint=checkpoint, task=task, component_config=component_config,
                       gpu_id=-1)
    configure_kwargs = dict(batch_token_budget=batch_token_budget, overflow=overflow, max_length=max_length)
    nlp = load_pipeline(**load_kwargs)  # here: fails early on a bad model; gives the vocab for .spacy input
    configure(nlp, **configure_kwargs)

    previous = recover_jsonl(out_path)
    previous_errors = recover_jsonl(err_path)
    done_ids = {id_key(r["id"]) for r in previous}
    failed_ids = {id_key(r["id"]) for r in previous_errors}
    errored = {(id_key(r["id"]), r.get("position")) for r in previous_errors}
    order = [id_key(r["id"]) for r in previous]
    done_ids |= failed_ids
    result = Result(output=str(out_path), errors=str(err_path))
    rows = []
    for seq, item in enumerate(_pending(read_input(in_path, kind, nlp.vocab, text_key, id_key_name), done_ids,
                                        errored, result, failed_ids)):
        payload = json.dumps({"id": item.id, "position": item.position, "text": item.text,
                              "questions": item.questions, "error": item.error}, ensure_ascii=False)
        rows.append({"seq": seq, "item": payload, "doc": item.doc.to_bytes() if item.doc is not None else b""})

    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as err:  # noqa: BLE001
            raise UsageError(f"--ray {address}: cannot connect to or start Ray: {err}") from err
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress

    out = AppendWriter(out_path)
    err_out = AppendWriter(err_path)
    shards = DocShards(Path(spacy_output)) if spacy_output else None
    start = time.perf_counter()
    try:
        if rows:
            use_gpu = gpu_id is not None and gpu_id >= 0
            dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
            dataset = dataset.map_batches(
                _RayPredictor,
                fn_constructor_kwargs=dict(load_kwargs=dict(load_kwargs, gpu_id=0 if use_gpu else -1),
                                           configure_kwargs=configure_kwargs, questions=questions,
                                           keep_docs=shards is not None),
                batch_size=batch_size,
                batch_format="numpy",
                concurrency=max(1, n_process),
                num_cpus=1,
                num_gpus=1 if use_gpu else 0,
            )
            for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
                ok_records, ok_docs, bad = [], [], []
                for seq, payload, ok, record, doc_bytes in zip(batch["seq"], batch["item"], batch["ok"],
                                                               batch["record"], batch["doc"]):
                    item = json.loads(payload)
                    record = json.loads(record)
                    if ok:
                        ok_records.append(record)
                        if shards is not None:
                            ok_docs.append(Doc(nlp.vocab).from_bytes(bytes(doc_bytes)))
                    else:
                        bad.append({"id": item["id"], "position": item["position"], "reason": record["reason"]})
                if shards is not None:
                    shards.write(ok_docs)
                err_out.write(bad)
                out.write(ok_records)
                order.extend(id_key(r["id"]) for r in ok_records)
                result.done += len(ok_records)
                result.failed += len(bad)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        out.close()
        err_out.close()
        result.seconds = time.perf_counter() - start
    if shards is not None and not result.interrupted:
        shards.merge(nlp.vocab, order)
    return result


# ---- command line ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacy-led",
        description="Run spaCy LED pipelines (summarize, classify, answer questions) over corpora.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser(
        "apply",
        help="apply a pipeline to a corpus, writing one JSON record per document (resumable)",
        description=(
            "Apply a pipeline to INPUT and write one JSON record per document to OUTPUT. "
            "Usage: spacy-led apply MODEL INPUT OUTPUT, or spacy-led apply --checkpoint DIR --task TASK INPUT "
            "OUTPUT. INPUT: a JSONL file, a folder of .txt files, or a .spacy file/folder. Running the same "
            "command again after an interruption resumes it. Exit status: 0 all documents done, 1 some failed "
            "(see the errors file), 2 usage error, 130 interrupted."
        ),
        usage="spacy-led apply [options] MODEL INPUT OUTPUT\n"
              "       spacy-led apply [options] --checkpoint DIR --task {classify,qa,summarize} INPUT OUTPUT",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="pipeline directory or package name (left out with --checkpoint), input, output .jsonl")
    p.add_argument("--checkpoint", help="HuggingFace LED directory: spacy.blank('en') + the --task component")
    p.add_argument("--task", choices=sorted(TASKS), help="component to build on --checkpoint")
    p.add_argument("--component-config", metavar="JSON",
                   help='extra component settings with --checkpoint, e.g. \'{"num_beams": 4}\'')
    p.add_argument("--text-key", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--id-key", default="id", help="JSONL field holding the id (default id: the line number)")
    p.add_argument("--question", action="append", dest="questions", metavar="TEXT",
                   help="QA question, repeatable (a JSONL record's 'questions' field takes precedence)")
    p.add_argument("--batch-size", type=int, default=32, help="documents per batch and per durable write (default: 32)")
    p.add_argument("--batch-token-budget", type=int, default=None,
                   help="padded tokens per model batch (the components' batch_token_budget)")
    p.add_argument("--overflow", choices=["chunk", "truncate", "error"], default=None,
                   help="long-document handling of the components (default: theirs)")
    p.add_argument("--max-length", type=int, default=None, help="model input limit of the components")
    p.add_argument("--n-process", type=int, default=1, help="worker processes, CPU only (default: 1)")
    p.add_argument("--gpu-id", type=int, default=-1, help="GPU to run on (spacy.require_gpu); -1: CPU")
    p.add_argument("--errors", default=None, help="errors file (default: OUTPUT.errors.jsonl)")
    p.add_argument("--spacy-output", default=None, metavar="PATH.spacy",
                   help="also write a DocBin with the annotations (store_user_data=True)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help='run through Ray Data on a cluster ("local": start one here); needs spacy-led[ray]')
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_parser = parser._subparsers._group_actions[0].choices["apply"]  # for usage errors
    expected = 2 if args.checkpoint else 3
    if len(args.paths) != expected:
        apply_parser.error(
            "expected MODEL INPUT OUTPUT" if expected == 3 else "with --checkpoint, expected INPUT OUTPUT (no MODEL)"
        )
    model = None if args.checkpoint else args.paths[0]
    input_path, output_path = args.paths[-2], args.paths[-1]
    component_config = None
    if args.component_config:
        try:
            component_config = json.loads(args.component_config)
            assert isinstance(component_config, dict)
        except (ValueError, AssertionError):
            apply_parser.error("--component-config must be a JSON object")
    kwargs = dict(
        checkpoint=args.checkpoint, task=args.task, text_key=args.text_key, id_key_name=args.id_key,
        questions=args.questions, batch_size=args.batch_size, batch_token_budget=args.batch_token_budget,
        n_process=args.n_process, gpu_id=args.gpu_id, errors_path=args.errors, spacy_output=args.spacy_output,
        overflow=args.overflow, max_length=args.max_length, component_config=component_config,
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.ray:
            result = apply_ray(model, input_path, output_path, address=args.ray, progress=not args.no_progress,
                               **kwargs)
        else:
            result = apply(model, input_path, output_path, progress=not args.no_progress, **kwargs)
    except UsageError as err:
        print(f"spacy-led apply: error: {err}", file=sys.stderr)
        return 2
    print(result.summary(), file=sys.stderr)
    return result.exit_code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
