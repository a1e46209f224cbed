"""Input documents: one ``Item`` per document of a JSONL file, a folder of ``.txt`` files or ``.spacy`` files.

The parsing of one JSONL line, one text file and one DocBin is shared by the local readers (which stream the
files here) and the Ray workers (which get the bytes from Ray Data), so both give the same ids, positions and
reasons. A document that cannot be read becomes an Item with an ``error``, never an exception.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

from .options import UsageError

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


@dataclass
class Item:
    """One input document: its id, where it is in the input, and its text (or Doc), or why it can't be read."""

    id: Any
    position: str
    text: Optional[str] = None
    doc: Any = None  # a Doc from a .spacy file
    questions: Optional[List[str]] = None
    error: Optional[str] = None


def id_key(value: Any) -> str:
    """A hashable, type-preserving key of an id (1 and "1" are different ids)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def input_kind(path: Path) -> str:
    """``jsonl``, ``txt`` or ``spacy`` from a local input path."""
    if not path.exists():
        raise UsageError(f"input {str(path)!r} does not exist.")
    if path.is_dir():
        if any(path.rglob("*.spacy")) and not any(path.rglob("*.txt")):
            return "spacy"
        return "txt"
    if path.suffix == ".spacy":
        return "spacy"
    return "jsonl"


def _as_questions(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(q, str) for q in value):
        return list(value)
    raise ValueError("'questions' must be a string or a list of strings")


def parse_jsonl_line(raw: bytes, number: int, text_key: str = "text", id_key_name: str = "id") -> Optional[Item]:
    """The Item of line ``number`` (1-based) of a JSONL file, or None for a blank line (not a document).
    id = the ``id_key_name`` field, else the line number."""
    if not raw.strip():
        return None
    position = f"line {number}"
    try:
        line = raw.decode("utf8")
    except UnicodeDecodeError as err:
        return Item(number, position, error=f"line is not valid UTF-8: {err}")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return Item(number, position, error=f"malformed JSON: {err}")
    if not isinstance(record, dict):
        return Item(number, position, error=f"expected a JSON object, got {type(record).__name__}")
    doc_id = record.get(id_key_name, number)
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        return Item(number, position, error=f"'{id_key_name}' must be a string or an integer, got {doc_id!r}")
    text = record.get(text_key)
    if not isinstance(text, str):
        reason = f"no '{text_key}' field" if text is None else f"'{text_key}' is not a string"
        return Item(doc_id, position, error=reason)
    questions = None
    if record.get("questions") is not None:
        try:
            questions = _as_questions(record["questions"])
        except ValueError as err:
            return Item(doc_id, position, error=str(err))
    return Item(doc_id, position, text=text, questions=questions)


def text_file_item(name: str, data: bytes) -> Item:
    """The Item of one ``.txt`` file; id and position = its path relative to the input folder."""
    try:
        return Item(name, name, text=data.decode("utf8"))
    except UnicodeDecodeError as err:
        return Item(name, name, error=f"file is not valid UTF-8: {err}")


def docbin_items(name: str, data: bytes, vocab) -> Iterator[Item]:
    """One Item per Doc of a ``.spacy`` file; id = ``file:index``. A broken file is one error Item."""
    from spacy.tokens import DocBin

    try:
        docs = list(DocBin().from_bytes(data).get_docs(vocab))
    except Exception as err:  # noqa: BLE001 - a broken file is reported, the others still run
        yield Item(f"{name}:*", name, error=f"cannot read DocBin: {type(err).__name__}: {err}")
        return
    for index, doc in enumerate(docs):
        doc_id = f"{name}:{index}"
        yield Item(doc_id, doc_id, doc=doc)


def input_files(path: Path, suffix: str) -> List[Path]:
    """The files of an input, in the order their documents are read (sorted, recursive)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())


def _relative_name(file: Path, root: Path) -> str:
    return file.relative_to(root).as_posix() if root.is_dir() else file.name


def read_jsonl(path: Path, text_key: str = "text", id_key_name: str = "id") -> Iterator[Item]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            item = parse_jsonl_line(raw, number, text_key, id_key_name)
            if item is not None:
                yield item


def read_txt_folder(path: Path) -> Iterator[Item]:
    for file in input_files(path, ".txt"):
        name = _relative_name(file, path)
        try:
            data = file.read_bytes()
        except OSError as err:
            yield Item(name, name, error=f"cannot read file: {err}")
            continue
        yield text_file_item(name, data)


def read_spacy(path: Path, vocab) -> Iterator[Item]:
    for file in input_files(path, ".spacy"):
        name = _relative_name(file, path)
        try:
            data = file.read_bytes()
        except OSError as err:
            yield Item(f"{name}:*", name, error=f"cannot read file: {err}")
            continue
        yield from docbin_items(name, data, vocab)


def read_input(path: Path, kind: str, vocab, text_key: str, id_key_name: str) -> Iterator[Item]:
    if kind == "jsonl":
        return read_jsonl(path, text_key, id_key_name)
    if kind == "txt":
        return read_txt_folder(path)
    return read_spacy(path, vocab)


def count_input(path: Path, kind: str) -> Optional[int]:
    """The number of documents, for the progress bar (cheap: no parsing). None when unknown."""
    try:
        if kind == "jsonl":
            with open(path, "rb") as f:
                return sum(1 for line in f if line.strip())
        if kind == "txt":
            return len(input_files(path, ".txt"))
        if kind == "spacy":
            from spacy.tokens import DocBin

            return sum(len(DocBin().from_disk(f)) for f in input_files(path, ".spacy"))
    except Exception:  # noqa: BLE001 - only the progress bar's total
        return None
    return None
