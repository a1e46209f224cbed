"""The registered readers: gold annotations as the components and scorers expect them, errors that name the
file, the line (or SQuAD question) and the problem, ``limit``, re-iteration, and use from a config."""
from __future__ import annotations

import json

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Config

from spacy_led.corpus import (
    CorpusError,
    LabelCorpus,
    SquadCorpus,
    SummaryCorpus,
    create_squad_reader,
    create_summary_reader,
    locate_answer,
    write_jsonl,
)
from spacy_led import scoring as _scoring  # noqa: F401  (registers spacy_led.qa_scorer.v1 without entry points)


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def _raises(path, where, what):
    """pytest.raises for a CorpusError whose message names the file, the location and the problem."""
    return pytest.raises(CorpusError, match=rf"(?s){path}.*{where}.*{what}")


# ---- summaries ------------------------------------------------------------------------------------------
def test_summary_corpus(tmp_path, nlp):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "The court met. Nobody came.", "summary": "Nobody came."},
                       {"text": "Zürich café 東京", "summary": "Unicode ✓", "id": 7}])
    with open(path, "a", encoding="utf8") as f:
        f.write("\n   \n")  # blank lines are skipped
        f.write(json.dumps({"text": "Third.", "summary": "3"}) + "\n")
    examples = list(SummaryCorpus(path)(nlp))
    assert [eg.reference._.summary for eg in examples] == ["Nobody came.", "Unicode ✓", "3"]
    assert [eg.reference.text for eg in examples] == ["The court met. Nobody came.", "Zürich café 東京", "Third."]
    for eg in examples:
        assert eg.predicted._.summary is None  # no gold on the side the pipeline writes to
        assert [t.text for t in eg.predicted] == [t.text for t in nlp.make_doc(eg.reference.text)]


def test_summary_corpus_custom_fields_and_limit(tmp_path, nlp):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"article": f"Article {i}.", "highlights": f"H{i}"} for i in range(5)])
    corpus = SummaryCorpus(path, text_field="article", summary_field="highlights", limit=2)
    assert [eg.reference._.summary for eg in corpus(nlp)] == ["H0", "H1"]
    assert len(list(SummaryCorpus(path, text_field="article", summary_field="highlights")(nlp))) == 5
    with pytest.raises(ValueError, match="limit"):
        SummaryCorpus(path, limit=-1)


def test_readers_are_reiterable(tmp_path, nlp):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": f"Text {i}.", "summary": f"S{i}"} for i in range(3)])
    corpus = SummaryCorpus(path)
    examples = corpus(nlp)
    first = [eg.reference._.summary for eg in examples]
    assert first == ["S0", "S1", "S2"]
    assert [eg.reference._.summary for eg in examples] == first  # the same iterable, again
    assert [eg.reference._.summary for eg in corpus(nlp)] == first  # the reader called again
    write_jsonl(path, [{"text": "Changed.", "summary": "new"}])
    assert [eg.reference._.summary for eg in corpus(nlp)] == ["new"]  # each call reads the file


def test_readers_register_the_extensions(tmp_path, nlp):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "Text.", "summary": "S"}])
    if Doc.has_extension("summary"):
        Doc.remove_extension("summary")  # as in a fresh process with no LED component created yet
    try:
        examples = list(SummaryCorpus(path)(nlp))
    finally:
        if not Doc.has_extension("summary"):  # leave the global registry as other tests expect it
            Doc.set_extension("summary", default=None)
    assert Doc.has_extension("summary") and Doc.get_extension("summary")[0] is None  # default None
    assert examples[0].reference._.summary == "S"


# ---- labels ---------------------------------------------------------------------------------------------
def test_label_corpus_collects_labels_and_sets_every_cat(tmp_path, nlp):
    path = tmp_path / "cats.jsonl"
    write_jsonl(path, [{"text": "One.", "labels": "SPORT"},
                       {"text": "Two.", "labels": ["POLITICS", "ECONOMY"]},
                       {"text": "Three.", "labels": []}])
    cats = [eg.reference.cats for eg in LabelCorpus(path)(nlp)]
    assert cats == [
        {"ECONOMY": 0.0, "POLITICS": 0.0, "SPORT": 1.0},
        {"ECONOMY": 1.0, "POLITICS": 1.0, "SPORT": 0.0},
        {"ECONOMY": 0.0, "POLITICS": 0.0, "SPORT": 0.0},
    ]
    assert list(cats[0]) == ["ECONOMY", "POLITICS", "SPORT"]  # collected labels are sorted
    assert LabelCorpus(path).labels() == ["ECONOMY", "POLITICS", "SPORT"]


def test_label_corpus_with_given_labels(tmp_path, nlp):
    path = tmp_path / "cats.jsonl"
    write_jsonl(path, [{"body": "One.", "tag": "B"}, {"body": "Two.", "tag": "C"}])
    corpus = LabelCorpus(path, text_field="body", labels_field="tag", labels=["C", "B", "A"])
    cats = [eg.reference.cats for eg in corpus(nlp)]
    assert cats == [{"C": 0.0, "B": 1.0, "A": 0.0}, {"C": 1.0, "B": 0.0, "A": 0.0}]
    assert list(cats[0]) == ["C", "B", "A"]  # the given order
    with _raises(path, "line 2", r"\['C'\].*not in the corpus' labels"):
        list(LabelCorpus(path, text_field="body", labels_field="tag", labels=["A", "B"])(nlp))


def test_label_corpus_validates_the_whole_file_before_the_first_example(tmp_path, nlp):
    path = _write_lines(tmp_path / "cats.jsonl", [json.dumps({"text": "One.", "labels": "A"}),
                                                  json.dumps({"text": "Two.", "labels": {"A": 1}})])
    corpus = LabelCorpus(path)
    # without `labels`, calling the reader reads every line to collect them: the error comes at once
    with _raises(path, "line 2", "field 'labels' must be a label .* or a list of labels"):
        corpus(nlp)


# ---- JSONL errors ---------------------------------------------------------------------------------------
def test_invalid_json_names_file_and_line(tmp_path, nlp):
    path = _write_lines(tmp_path / "bad.jsonl", [
        json.dumps({"text": "One.", "summary": "1"}),
        json.dumps({"text": "Two.", "summary": "2"}),
        '{"text": "Three.", "summary": "3"',
    ])
    examples = iter(SummaryCorpus(path)(nlp))
    assert next(examples).reference._.summary == "1"  # streamed: good lines come before the bad one
    assert next(examples).reference._.summary == "2"
    with _raises(path, "line 3", "invalid JSON"):
        next(examples)
    # streaming also means a limit stops before the bad line
    assert len(list(SummaryCorpus(path, limit=2)(nlp))) == 2


@pytest.mark.parametrize(
    "record,problem",
    [
        ({"text": "Two."}, r"missing field 'summary' \(fields present: 'text'\)"),
        ({"summary": "S"}, "missing field 'text'"),
        ({"text": "Two.", "summary": 3}, "field 'summary' must be a string, got a number"),
        ({"text": ["Two."], "summary": "S"}, "field 'text' must be a string, got a list"),
        ({"text": "   ", "summary": "S"}, "field 'text' is empty"),
        ({"text": "Two.", "summary": ""}, "field 'summary' is empty"),
        (["not", "an", "object"], "expected a JSON object, got a list"),
    ],
)
def test_malformed_jsonl_lines(tmp_path, nlp, record, problem):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "One.", "summary": "1"}), json.dumps(record)])
    with _raises(path, "line 2", problem):
        list(SummaryCorpus(path)(nlp))


def test_encoding(tmp_path, nlp):
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode("utf8") + json.dumps({"text": "Café.", "summary": "S"}).encode("utf8") + b"\n")
    assert [eg.reference.text for eg in SummaryCorpus(path)(nlp)] == ["Café."]  # a BOM is tolerated
    path.write_bytes(b'{"text": "One.", "summary": "1"}\n{"text": "Caf\xe9.", "summary": "2"}\n')
    with _raises(path, "line 2", "not UTF-8"):
        list(SummaryCorpus(path)(nlp))


def test_missing_file_fails_when_the_reader_is_made(tmp_path, nlp):
    missing = tmp_path / "nowhere" / "train.jsonl"
    for make in (lambda: SummaryCorpus(missing), lambda: LabelCorpus(missing, labels=["A"]),
                 lambda: SquadCorpus(missing), lambda: create_summary_reader(str(missing))):
        with pytest.raises(CorpusError, match=rf"{missing}: no such file"):
            make()
    with pytest.raises(CorpusError, match="needs a path"):
        create_squad_reader(None)
    assert issubclass(CorpusError, ValueError)


def test_file_deleted_after_the_reader_was_made(tmp_path, nlp):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [{"text": "One.", "summary": "1"}])
    corpus = SummaryCorpus(path)
    path.unlink()
    with pytest.raises(CorpusError, match=rf"{path}: no such file"):
        corpus(nlp)


# ---- SQuAD ----------------------------------------------------------------------------------------------
CONTEXT = "Super Bowl 50 was won by the Denver Broncos.  They beat the Carolina Panthers 24–10 in 2016."


def _squad(qas, context=CONTEXT, more_paragraphs=()):
    return {"version": "v2.0", "data": [
        {"title": "Super_Bowl_50", "paragraphs": [{"context": context, "qas": qas}, *more_paragraphs]}]}


def _write_squad(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf8")
    return path


def test_squad_corpus(tmp_path, nlp):
    broncos = CONTEXT.index("Denver Broncos")
    panthers = CONTEXT.index("Carolina Panthers")
    qas = [
        {"id": "q1", "question": "Who won Super Bowl 50?",
         "answers": [{"text": "Denver Broncos", "answer_start": broncos},
                     {"text": "the Denver Broncos", "answer_start": broncos - 4}]},
        {"id": "q2", "question": "Who lost?",  # offset quirk: two characters early
         "answers": [{"text": "Carolina Panthers", "answer_start": panthers - 2}]},
        {"id": "q3", "question": "Who sang the anthem?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Broncos", "answer_start": broncos + 7}]},
        {"id": "q4", "question": "Who was the MVP?", "answers": []},  # SQuAD 1.1 style, no is_impossible
        {"id": "q5", "question": "What was the score?",  # answer text with a trailing space
         "answers": [{"text": "24–10 ", "answer_start": CONTEXT.index("24–10")}]},
    ]
    second = {"context": "Paris is the capital of France.",
              "qas": [{"id": "p1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]}]}
    path = _write_squad(tmp_path / "dev.json", _squad(qas, more_paragraphs=[second]))
    examples = list(SquadCorpus(path)(nlp))
    assert len(examples) == 2  # one per paragraph

    questions = [qa["question"] for qa in qas]
    ref, pred = examples[0].reference, examples[0].predicted
    assert ref.text == CONTEXT and pred.text == CONTEXT
    assert pred._.questions == questions and ref._.questions == questions  # the QA component reads pred
    assert pred._.answers is None and pred._.gold_answers is None
    answers = ref._.answers
    assert list(answers) == questions
    assert answers[questions[0]].text == "Denver Broncos"  # the first gold answer, token-aligned
    assert answers[questions[0]].doc is ref
    assert (answers[questions[1]].start_char, answers[questions[1]].text) == (panthers, "Carolina Panthers")
    assert answers[questions[2]] is None and answers[questions[3]] is None
    assert answers[questions[4]].text == "24–10"
    assert ref._.gold_answers == {
        questions[0]: ["Denver Broncos", "the Denver Broncos"],
        questions[1]: ["Carolina Panthers"],
        questions[2]: [],
        questions[3]: [],
        questions[4]: ["24–10 "],
    }
    assert examples[1].reference._.answers["Capital?"].text == "Paris"
    assert examples[1].predicted._.questions == ["Capital?"]


def test_squad_partial_token_answer_expands_to_tokens(tmp_path, nlp):
    path = _write_squad(tmp_path / "dev.json", _squad([
        {"id": "q", "question": "Which team?", "answers": [{"text": "Bronco", "answer_start": CONTEXT.index("Bronco")}]}]))
    example = next(iter(SquadCorpus(path)(nlp)))
    assert example.reference._.answers["Which team?"].text == "Broncos"
    assert example.reference._.gold_answers["Which team?"] == ["Bronco"]  # scored against the gold text


def test_squad_repeated_question_merges_answers(tmp_path, nlp):
    path = _write_squad(tmp_path / "dev.json", _squad([
        {"id": "a", "question": "Who won?", "answers": []},
        {"id": "b", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": CONTEXT.index("Denver")}]},
    ]))
    ref = next(iter(SquadCorpus(path)(nlp))).reference
    assert ref._.questions == ["Who won?"]
    assert ref._.gold_answers == {"Who won?": ["Denver"]}
    assert ref._.answers["Who won?"].text == "Denver"


def test_squad_paragraph_without_questions_is_skipped(tmp_path, nlp):
    empty = {"context": "Nothing is asked here.", "qas": []}
    path = _write_squad(tmp_path / "dev.json", _squad([{"id": "q", "question": "Who?", "answers": []}],
                                                      more_paragraphs=[empty]))
    assert [eg.reference.text for eg in SquadCorpus(path)(nlp)] == [CONTEXT]


def test_squad_limit_and_reiteration(tmp_path, nlp):
    paragraphs = [{"context": f"Paragraph {i}.", "qas": [{"id": str(i), "question": "Which?",
                                                           "answers": [{"text": str(i), "answer_start": 10}]}]}
                  for i in range(4)]
    path = _write_squad(tmp_path / "train.json", {"data": [{"title": "T", "paragraphs": paragraphs}]})
    examples = SquadCorpus(path, limit=3)(nlp)
    assert [eg.reference._.gold_answers["Which?"] for eg in examples] == [["0"], ["1"], ["2"]]
    assert [eg.reference._.answers["Which?"].text for eg in examples] == ["0", "1", "2"]


def test_locate_answer():
    context = "the cat sat on the mat"
    assert locate_answer(context, "cat", 4) == (4, 7)
    assert locate_answer(context, "the", 17) == (15, 18)  # the occurrence nearest the given offset
    assert locate_answer(context, "the", 1) == (0, 3)
    assert locate_answer(context, " mat ", 18) == (19, 22)  # surrounding whitespace ignored
    assert locate_answer(context, "dog", 4) is None
    far = "x" * 500 + " cat"
    assert locate_answer(far, "cat", 0) is None  # not "near" the offset any more


@pytest.mark.parametrize(
    "answer,problem",
    [
        ({"text": "Seattle Seahawks", "answer_start": 10}, r"answer 'Seattle Seahawks' is not in the context at answer_start=10"),
        ({"text": "Denver", "answer_start": 10_000}, r"\"answer_start\" must be a character offset in 0\.\.\d+, got 10000"),
        ({"text": "Denver", "answer_start": "29"}, r"\"answer_start\" must be a character offset .* got \"29\""),
        ({"text": "", "answer_start": 0}, "field 'text' is empty"),
        ({"answer_start": 0}, "missing field 'text'"),
    ],
)
def test_bad_squad_answers_name_file_and_question(tmp_path, nlp, answer, problem):
    qas = [{"id": "ok", "question": "Fine?", "answers": [{"text": "Denver", "answer_start": CONTEXT.index("Denver")}]},
           {"id": "56be4db0acb8001400a502ec", "question": "Who won?", "answers": [answer]}]
    path = _write_squad(tmp_path / "dev.json", _squad(qas))
    with _raises(path, "article 0, paragraph 0, question id '56be4db0acb8001400a502ec', answer 0", problem):
        list(SquadCorpus(path)(nlp))


@pytest.mark.parametrize(
    "data,where,problem",
    [
        ({"version": "1.1"}, "", r"not SQuAD JSON"),
        ({"data": [{"title": "T"}]}, "article 0", '"paragraphs" list'),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, "article 0, paragraph 0", "missing field 'context'"),
        ({"data": [{"paragraphs": [{"context": "C.", "qas": {}}]}]}, "article 0, paragraph 0", '"qas" must be a list'),
        ({"data": [{"paragraphs": [{"context": "C.", "qas": [{"id": "x", "answers": []}]}]}]},
         "question id 'x'", "missing field 'question'"),
        ({"data": [{"paragraphs": [{"context": "C.", "qas": [{"question": "Q?", "answers": [], "is_impossible": "no"}]}]}]},
         "paragraph 0, question 0", '"is_impossible" must be true or false'),
    ],
)
def test_malformed_squad_structure(tmp_path, nlp, data, where, problem):
    path = _write_squad(tmp_path / "dev.json", data)
    with _raises(path, where, problem):
        list(SquadCorpus(path)(nlp))


def test_squad_invalid_json_names_the_line(tmp_path, nlp):
    path = tmp_path / "dev.json"
    path.write_text('{"data": [\n  {"title": "T",\n   "paragraphs": [}\n]}', encoding="utf8")
    with _raises(path, "line 3", "invalid JSON"):
        list(SquadCorpus(path)(nlp))


# ---- through the registry and nlp.evaluate --------------------------------------------------------------
def test_readers_resolve_from_a_config(tmp_path, nlp):
    write_jsonl(tmp_path / "sum.jsonl", [{"text": "T.", "summary": "S"}, {"text": "U.", "summary": "V"}])
    write_jsonl(tmp_path / "cats.jsonl", [{"text": "T.", "labels": "A"}])
    _write_squad(tmp_path / "qa.json", _squad([{"id": "q", "question": "Who?", "answers": []}]))
    config = Config().from_str(f"""
        [paths]
        dir = "{tmp_path}"

        [corpora]

        [corpora.summaries]
        @readers = "spacy_led.SummaryCorpus.v1"
        path = ${{paths.dir}}/sum.jsonl
        limit = 1

        [corpora.labels]
        @readers = "spacy_led.LabelCorpus.v1"
        path = ${{paths.dir}}/cats.jsonl
        labels = ["A", "B"]

        [corpora.qa]
        @readers = "spacy_led.SquadCorpus.v1"
        path = ${{paths.dir}}/qa.json
    """)
    corpora = registry.resolve(config)["corpora"]
    assert [eg.reference._.summary for eg in corpora["summaries"](nlp)] == ["S"]
    assert [eg.reference.cats for eg in corpora["labels"](nlp)] == [{"A": 1.0, "B": 0.0}]
    assert [eg.predicted._.questions for eg in corpora["qa"](nlp)] == [["Who?"]]
    missing = Config().from_str('[corpora]\n[corpora.dev]\n@readers = "spacy_led.SquadCorpus.v1"\npath = "/no/such.json"')
    with pytest.raises(CorpusError, match="/no/such.json: no such file"):
        registry.resolve(missing)


class _OracleQA:
    """Answers each question of ``doc._.questions`` with its first token; scored by spacy_led.qa_scorer.v1."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.seen = []

    def __call__(self, doc):
        self.seen.append(doc._.questions)
        doc._.answers = {q: doc[0:1] for q in doc._.questions or []}
        return doc

    def score(self, examples, **kwargs):
        return self.scorer(examples, **kwargs)


@Language.factory("test_corpus_oracle_qa", default_config={"scorer": {"@scorers": "spacy_led.qa_scorer.v1"}})
def _make_oracle_qa(nlp, name, scorer):
    return _OracleQA(scorer)


def test_evaluate_keeps_the_questions_on_the_predicted_doc(tmp_path):
    """nlp.evaluate copies eg.predicted (user data included) instead of rebuilding it from the text, so the
    QA component sees the questions the reader put there."""
    nlp = spacy.blank("en")
    component = nlp.add_pipe("test_corpus_oracle_qa")
    path = _write_squad(tmp_path / "dev.json", _squad([
        {"id": "1", "question": "First word?", "answers": [{"text": "Super", "answer_start": 0}]},
        {"id": "2", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": CONTEXT.index("Denver")}]},
    ]))
    scores = nlp.evaluate(SquadCorpus(path)(nlp))
    assert component.seen == [["First word?", "Who won?"]]
    assert scores["qa_exact_match"] == pytest.approx(0.5)
    assert scores["qa_f1"] == pytest.approx(0.5)
