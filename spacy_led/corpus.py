"""Training and evaluation data for the LED components, read straight from JSONL or SQuAD JSON.

Registered readers (name them in ``[corpora]``, like ``spacy.Corpus.v1``):

- ``spacy_led.SummaryCorpus.v1``: JSONL ``{"text": ..., "summary": ...}`` -> ``reference._.summary``
- ``spacy_led.LabelCorpus.v1``: JSONL ``{"text": ..., "labels": "A" | ["A", "B"]}`` -> ``reference.cats``
  (1.0 / 0.0 for every label of the corpus)
- ``spacy_led.SquadCorpus.v1``: SQuAD 1.1 / 2.0 JSON, one Example per paragraph with questions -> ``_.questions`` on both
  docs (the QA component reads its questions from the predicted doc), ``reference._.answers`` (question ->
  the first gold answer as a token-aligned Span, or None when unanswerable) and ``reference._.gold_answers``
  (question -> every gold answer text, [] when unanswerable).

Each reader returns a callable ``(nlp) -> Iterable[Example]``; every call reads the file again, and the
iterable it returns can be iterated more than once. JSONL is streamed line by line. A malformed record raises
:class:`CorpusError`, naming the file, the line (or the SQuAD question) and what is wrong, as soon as it is
read; a missing file raises when the reader is created.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry

PathLike = Union[str, Path]

# How far (in characters) a SQuAD answer may sit from its ``answer_start`` and still be taken as that answer.
# Real SQuAD files are off by a character or two where whitespace was normalized.
MAX_ANSWER_SHIFT = 100
from .extensions import ensure_extensions


class CorpusError(ValueError):
    """A training/evaluation file that cannot be read, with where (file, line or question) and what."""

    def __init__(self, path: PathLike, where: Optional[str], problem: str) -> None:
        self.path = str(path)
        self.where = where
        self.problem = problem
        location = f"{self.path}, {where}" if where else self.path
        super().__init__(f"Corpus file {location}: {problem}")


def write_jsonl(path: PathLike, records: Iterable[Dict[str, Any]]) -> None:
    """Write ``records`` as JSONL (UTF-8, one object per line): the format the JSONL readers read."""
    with open(path, "w", encoding="utf8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False))
            f.write("\n")


# ---- shared ---------------------------------------------------------------------------------------------
def _checked_path(path: Optional[PathLike], reader: str) -> Path:
    if path is None:
        raise CorpusError(
            "<None>", None,
            f"{reader} needs a path. Maybe you forgot to set it in your config.cfg or override it on the CLI "
            "(--paths.train / --paths.dev)?",
        )
    checked = Path(path)
    if not checked.exists():
        raise CorpusError(checked, None, "no such file.")
    if not checked.is_file():
        raise CorpusError(checked, None, "is a directory, not a file.")
    return checked


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a whole number >= 0 (0 = all); got {limit!r}.")
    return limit


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _jsonl_records(path: Path) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """(line number, object) for each non-blank line, read one line at a time."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CorpusError(path, None, f"cannot be opened ({e.strerror or e}).") from e
    with f:
        for line_no, raw in enumerate(f, 1):
            where = f"line {line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf8")
            except UnicodeDecodeError as e:
                raise CorpusError(path, where, f"not UTF-8 ({e.reason} at byte {e.start}).") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(path, where, f"invalid JSON ({e.msg} at column {e.colno}).") from None
            if not isinstance(record, dict):
                raise CorpusError(path, where, f"expected a JSON object, got {_type_name(record)}.")
            yield line_no, record


def _text_field(path: Path, where: str, record: Dict[str, Any], field: str, *, allow_empty: bool = False) -> str:
    if field not in record:
        present = ", ".join(repr(k) for k in record) or "none"
        raise CorpusError(path, where, f"missing field {field!r} (fields present: {present}).")
    value = record[field]
    if not isinstance(value, str):
        raise CorpusError(path, where, f"field {field!r} must be a string, got {_type_name(value)}.")
    if not allow_empty and not value.strip():
        raise CorpusError(path, where, f"field {field!r} is empty.")
    return value


def _docs(nlp: Language, text: str) -> Tuple[Doc, Doc]:
    """(predicted, reference): the same tokenization, no gold on the predicted one."""
    predicted = nlp.make_doc(text)
    return predicted, predicted.copy()


class _Examples:
    """A re-iterable view of a reader's examples: each iteration reads the file again."""

    def __init__(self, produce: Callable[[], Iterator[Example]], limit: int) -> None:
        self._produce = produce
        self._limit = limit

    def __iter__(self) -> Iterator[Example]:
        examples = self._produce()
        try:
            for count, example in enumerate(examples, 1):
                yield example
                if self._limit and count >= self._limit:
                    return
        finally:
            examples.close()  # closes the file now, not when garbage collected


# ---- summaries ------------------------------------------------------------------------------------------
class SummaryCorpus:
    """JSONL with a text and a summary per line -> Examples whose reference carries ``_.summary``."""

    def __init__(self, path: PathLike, *, text_field: str = "text", summary_field: str = "summary", limit: int = 0):
        self.path = _checked_path(path, "spacy_led.SummaryCorpus.v1")
        self.text_field = text_field
        self.summary_field = summary_field
        self.limit = _check_limit(limit)

    def __call__(self, nlp: Language) -> Iterable[Example]:
        ensure_extensions()
        _checked_path(self.path, "spacy_led.SummaryCorpus.v1")
        return _Examples(lambda: self._read(nlp), self.limit)

    def _read(self, nlp: Language) -> Iterator[Example]:
        for line_no, record in _jsonl_records(self.path):
            where = f"line {line_no}"
            text = _text_field(self.path, where, record, self.text_field)
            summary = _text_field(self.path, where, record, self.summary_field)
            predicted, reference = _docs(nlp, text)
            reference._.summary = summary
            yield Example(predicted, reference)


@registry.readers("spacy_led.SummaryCorpus.v1")
def create_summary_reader(
    path: Optional[PathLike], text_field: str = "text", summary_field: str = "summary", limit: int = 0
) -> Callable[[Language], Iterable[Example]]:
    return SummaryCorpus(path, text_field=text_field, summary_field=summary_field, limit=limit)


# ---- labels ---------------------------------------------------------------------------------------------
class LabelCorpus:
    """JSONL with a text and a label (or a list of labels) per line -> Examples with ``reference.cats``.

    ``labels`` is the full label set; without it the labels are collected (sorted) in a first pass over the
    whole file, which also validates every line before any example is produced.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        text_field: str = "text",
        labels_field: str = "labels",
        labels: Optional[Sequence[str]] = None,
        limit: int = 0,
    ) -> None:
        self.path = _checked_path(path, "spacy_led.LabelCorpus.v1")
        self.text_field = text_field
        self.labels_field = labels_field
        if labels is not None:
            if isinstance(labels, str) or not all(isinstance(label, str) and label for label in labels):
                raise ValueError(f"labels must be a list of non-empty strings; got {labels!r}.")
            labels = list(dict.fromkeys(labels))
        self.given_labels: Optional[List[str]] = labels
        self.limit = _check_limit(limit)
        self._collected: Optional[Tuple[Tuple[float, int], List[str]]] = None

    def labels(self) -> List[str]:
        """The label set: the one given, else every label in the file (sorted)."""
        if self.given_labels is not None:
            return list(self.given_labels)
        stat = self.path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if self._collected is None or self._collected[0] != stamp:
            found = set()
            for line_no, record in _jsonl_records(self.path):
                where = f"line {line_no}"
                _text_field(self.path, where, record, self.text_field)
                found.update(self._record_labels(where, record))
            self._collected = (stamp, sorted(found))
        return list(self._collected[1])

    def _record_labels(self, where: str, record: Dict[str, Any]) -> List[str]:
        field = self.labels_field
        if field not in record:
            present = ", ".join(repr(k) for k in record) or "none"
            raise CorpusError(self.path, where, f"missing field {field!r} (fields present: {present}).")
        value = record[field]
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise CorpusError(
                self.path, where,
                f"field {field!r} must be a label (a non-empty string) or a list of labels, got {json.dumps(value)}.",
            )
        return values

    def __call__(self, nlp: Language) -> Iterable[Example]:
        ensure_extensions()
        _checked_path(self.path, "spacy_led.LabelCorpus.v1")
        labels = self.labels()
        return _Examples(lambda: self._read(nlp, labels), self.limit)

    def _read(self, nlp: Language, labels: List[str]) -> Iterator[Example]:
        known = set(labels)
        for line_no, record in _jsonl_records(self.path):
            where = f"line {line_no}"
            text = _text_field(self.path, where, record, self.text_field)
            positive = set(self._record_labels(where, record))
            unknown = positive - known
            if unknown:
                raise CorpusError(
                    self.path, where,
                    f"label(s) {sorted(unknown)} are not in the corpus' labels {labels}: add them to `labels`.",
                )
            predicted, reference = _docs(nlp, text)
            reference.cats = {label: 1.0 if label in positive else 0.0 for label in labels}
            yield Example(predicted, reference)


@registry.readers("spacy_led.LabelCorpus.v1")
def create_label_reader(
    path: Optional[PathLike],
    text_field: str = "text",
    labels_field: str = "labels",
    labels: Optional[List[str]] = None,
    limit: int = 0,
) -> Callable[[Language], Iterable[Example]]:
    return LabelCorpus(path, text_field=text_field, labels_field=labels_field, labels=labels, limit=limit)


# ---- SQuAD ----------------------------------------------------------------------------------------------
def locate_answer(context: str, text: str, answer_start: int) -> Optional[Tuple[int, int]]:
    """Character range of ``text`` in ``context``: at ``answer_start`` if it is there, else the occurrence
    (of the text, or of the text without surrounding whitespace) nearest to ``answer_start`` within
    ``MAX_ANSWER_SHIFT`` characters. None if there is none."""
    if context[answer_start : answer_start + len(text)] == text:
        return answer_start, answer_start + len(text)
    best: Optional[Tuple[int, int]] = None
    for needle in dict.fromkeys((text, text.strip())):
        lo = max(0, answer_start - MAX_ANSWER_SHIFT)
        hi = min(len(context), answer_start + MAX_ANSWER_SHIFT + len(needle))
        found = context.find(needle, lo, hi)
        while found != -1:
            if best is None or abs(found - answer_start) < abs(best[0] - answer_start):
                best = (found, found + len(needle))
            found = context.find(needle, found + 1, hi)
    return best


class SquadCorpus:
    """SQuAD 1.1 / 2.0 JSON -> one Example per paragraph (see the module docstring for the annotations).

    A paragraph without questions is skipped: there is nothing to learn or score in it, and the QA component
    would answer the Doc's own question sentences for an empty ``_.questions``."""

    def __init__(self, path: PathLike, *, limit: int = 0) -> None:
        self.path = _checked_path(path, "spacy_led.SquadCorpus.v1")
        self.limit = _check_limit(limit)

    def __call__(self, nlp: Language) -> Iterable[Example]:
        ensure_extensions()
        _checked_path(self.path, "spacy_led.SquadCorpus.v1")
        return _Examples(lambda: self._read(nlp), self.limit)

    def _load(self) -> List[Any]:
        try:
            with open(self.path, encoding="utf8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise CorpusError(self.path, f"line {e.lineno}", f"invalid JSON ({e.msg} at column {e.colno}).") from None
        except UnicodeDecodeError as e:
            raise CorpusError(self.path, None, f"not UTF-8 ({e.reason}).") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise CorpusError(
                self.path, None,
                'not SQuAD JSON: expected {"data": [{"title": ..., "paragraphs": [...]}, ...]}.',
            )
        return data["data"]

    def _read(self, nlp: Language) -> Iterator[Example]:
        for a, article in enumerate(self._load()):
            if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                raise CorpusError(self.path, f"article {a}", 'expected an object with a "paragraphs" list.')
            for p, paragraph in enumerate(article["paragraphs"]):
                example = self._paragraph(nlp, f"article {a}, paragraph {p}", paragraph)
                if example.reference._.questions:
                    yield example

    def _paragraph(self, nlp: Language, where: str, paragraph: Any) -> Example:
        if not isinstance(paragraph, dict):
            raise CorpusError(self.path, where, f"expected an object, got {_type_name(paragraph)}.")
        context = _text_field(self.path, where, paragraph, "context")
        qas = paragraph.get("qas")
        if not isinstance(qas, list):
            raise CorpusError(self.path, where, f'field "qas" must be a list, got {_type_name(qas)}.')
        predicted, reference = _docs(nlp, context)
        questions: List[str] = []
        spans: Dict[str, Any] = {}
        gold_answers: Dict[str, List[str]] = {}
        for q, qa in enumerate(qas):
            if not isinstance(qa, dict):
                raise CorpusError(self.path, f"{where}, question {q}", f"expected an object, got {_type_name(qa)}.")
            qid = qa.get("id")
            q_where = f"{where}, question id {qid!r}" if qid is not None else f"{where}, question {q}"
            question = _text_field(self.path, q_where, qa, "question")
            texts, span = self._answers(reference, context, q_where, qa)
            if question not in gold_answers:
                # A question asked twice of one paragraph is one question with the answers of both.
                questions.append(question)
                gold_answers[question] = []
                spans[question] = None
            gold_answers[question].extend(texts)
            if spans[question] is None:
                spans[question] = span
        predicted._.questions = list(questions)
        reference._.questions = list(questions)
        reference._.answers = spans
        reference._.gold_answers = gold_answers
        return Example(predicted, reference)

    def _answers(self, doc: Doc, context: str, where: str, qa: Dict[str, Any]) -> Tuple[List[str], Any]:
        """(every gold answer text, the first one as a Span); ([], None) for an unanswerable question."""
        answers = qa.get("answers", [])
        if not isinstance(answers, list):
            raise CorpusError(self.path, where, f'field "answers" must be a list, got {_type_name(answers)}.')
        impossible = qa.get("is_impossible", False)
        if not isinstance(impossible, bool):
            raise CorpusError(self.path, where, f'field "is_impossible" must be true or false, got {json.dumps(impossible)}.')
        if impossible:
            return [], None
        texts: List[str] = []
        first_span = None
        for n, answer in enumerate(answers):
            a_where = f"{where}, answer {n}"
            if not isinstance(answer, dict):
                raise CorpusError(self.path, a_where, f"expected an object, got {_type_name(answer)}.")
            text = _text_field(self.path, a_where, answer, "text")
            start = answer.get("answer_start")
            if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start <= len(context):
                raise CorpusError(
                    self.path, a_where,
                    f'"answer_start" must be a character offset in 0..{len(context)}, got {json.dumps(start)}.',
                )
            located = locate_answer(context, text, start)
            if located is None:
                raise CorpusError(
                    self.path, a_where,
                    f"answer {text!r} is not in the context at answer_start={start} (context there: "
                    f"{context[start : start + len(text)]!r}) nor within {MAX_ANSWER_SHIFT} characters of it.",
                )
            texts.append(text)
            if first_span is None:
                first_span = self._span(doc, context, a_where, text, located)
        return texts, first_span

    def _span(self, doc: Doc, context: str, where: str, text: str, located: Tuple[int, int]):
        start, end = located
        while start < end and context[start].isspace():
            start += 1
        while end > start and context[end - 1].isspace():
            end -= 1
        span = doc.char_span(start, end, alignment_mode="expand")
        if span is None or not len(span):
            raise CorpusError(self.path, where, f"answer {text!r} covers no token of the context.")
        return span


@registry.readers("spacy_led.SquadCorpus.v1")
def create_squad_reader(path: Optional[PathLike], limit: int = 0) -> Callable[[Language], Iterable[Example]]:
    return SquadCorpus(path, limit=limit)
