"""ROUGE is Google's rouge-score with stemming, ROUGE-Lsum on sentence-split text; SQuAD EM/F1 follow the official evaluation script; the
registered scorers average them over Examples the way the components will be scored."""
from __future__ import annotations

import collections
import random
import re
import string

import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import registry
from thinc.api import Config

from spacy_led.scoring import (
    ROUGE_TYPES,
    normalize_answer,
    rouge_scores,
    split_sentences,
    squad_exact_match,
    squad_f1,
)

for _name in ("summary", "abstract", "answers", "gold_answers"):
    if not Doc.has_extension(_name):
        Doc.set_extension(_name, default=None)

NLP = spacy.blank("en")

WORDS = ["the", "The", "cat", "CAT", "sat", "on", "mat", "a", "dog", "ran", "42", "3.14", "x-ray", "don't",
         "café", "naïve", "東京", "Zürich", "U.S.", "e-mail", "hello,", "world!", "(note)", "--", "...", "\n", "\t"]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _pairs():
    rng = random.Random(1234)
    pairs = [
        ("the cat sat on the mat", "the cat sat on the mat"),  # identical
        ("alpha beta gamma", "delta epsilon"),  # disjoint
        ("", ""),
        ("", "something here"),
        ("something here", ""),
        ("!!! ... ---", "the cat"),  # punctuation only: no tokens
        ("Hello, WORLD!!", "hello world"),
        ("Room 101 costs $4.50", "room 101 costs 4 50 dollars"),
        ("the the the the", "the the cat"),  # repeated words
        ("a b c d e f", "f e d c b a"),  # reversed order
        ("café naïve 東京 Zürich", "caf na ve z rich"),  # non-ASCII letters separate tokens
        ("ünïcödé ÀÉÎ", "n c d"),
    ]
    for _ in range(150):
        pairs.append((_text(rng, rng.randint(0, 30)), _text(rng, rng.randint(0, 30))))
    for _ in range(3):
        pairs.append((_text(rng, rng.randint(300, 500)), _text(rng, rng.randint(300, 500))))
    return pairs


# ---- ROUGE ----------------------------------------------------------------------------------------------
rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")  # a runtime dependency: installed with the package

# Real-looking summaries, written one sentence per item (the split rouge-score's ROUGE-Lsum needs), with
# abbreviations and decimals a naive split on "." would cut, and inflections only stemming matches.
REFERENCE_SENTENCES = [
    "The U.S. Department of Energy funded three pilot plants in 2019.",
    "Dr. Alvarez reports that the plants stored 3.5 GWh of surplus wind power.",
    "Costs fell by 12 percent as the operators learned to run the batteries!",
    "Is the approach ready for wider use?",
    "The authors argue it is, but they call for longer trials.",
]
PREDICTION_SENTENCES = [
    "Dr. Alvarez says the pilot plant stores 3.5 GWh of wind power.",
    "The U.S. Department of Energy funds three plants.",
    "Cost is falling as operators learn to running batteries.",
    "Longer trials are called for by the authors.",
]
REFERENCE = " ".join(REFERENCE_SENTENCES)
PREDICTION = " ".join(PREDICTION_SENTENCES)


def _reference_scores(prediction_lines, reference_lines, use_stemmer=True, types=ROUGE_TYPES):
    """rouge-score's own numbers, given the texts already split one sentence per line."""
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    theirs = scorer.score("\n".join(reference_lines), "\n".join(prediction_lines))  # reference first
    return {key: {"p": s.precision, "r": s.recall, "f": s.fmeasure} for key, s in theirs.items()}


def test_sentences_are_split_for_rouge_lsum():
    assert split_sentences(REFERENCE) == "\n".join(REFERENCE_SENTENCES)
    assert split_sentences(PREDICTION) == "\n".join(PREDICTION_SENTENCES)
    assert split_sentences("") == ""


def test_rouge_equals_rouge_score_with_stemming_and_lsum_on_multi_sentence_text():
    ours = rouge_scores(PREDICTION, REFERENCE)
    assert ours == _reference_scores(PREDICTION_SENTENCES, REFERENCE_SENTENCES)  # exact, every type
    # the settings matter on this text, so the equality above would catch a lost stemmer or a lost split
    assert ours["rougeLsum"]["f"] > ours["rougeL"]["f"]  # sentences reordered: Lsum matches across them
    unsplit = _reference_scores([PREDICTION], [REFERENCE])
    assert unsplit["rougeLsum"] == unsplit["rougeL"] != ours["rougeLsum"]
    unstemmed = rouge_scores(PREDICTION, REFERENCE, use_stemmer=False)
    assert unstemmed == _reference_scores(PREDICTION_SENTENCES, REFERENCE_SENTENCES, use_stemmer=False)
    assert unstemmed["rouge1"]["f"] < ours["rouge1"]["f"]


def test_rouge_hand_computed():
    # two sentences in the other order: the whole-text LCS keeps one of them (3 of 6 tokens), the summary-level
    # LCS (per reference sentence, over every predicted sentence) finds both
    scores = rouge_scores("A dog barked. The cat ran.", "The cat ran. A dog barked.")
    assert scores["rouge1"]["f"] == 1.0
    assert scores["rouge2"] == pytest.approx({"p": 4 / 5, "r": 4 / 5, "f": 4 / 5})  # "barked the" is not shared
    assert scores["rougeL"] == pytest.approx({"p": 0.5, "r": 0.5, "f": 0.5})
    assert scores["rougeLsum"] == pytest.approx({"p": 1.0, "r": 1.0, "f": 1.0})

    # stemming (on by default): "cats"/"cat", "running"/"runs" match; "were"/"a" do not
    scores = rouge_scores("The cats were running", "the cat runs", use_stemmer=True)
    assert scores["rouge1"] == pytest.approx({"p": 3 / 4, "r": 1.0, "f": 6 / 7})
    assert rouge_scores("The cats were running", "the cat runs") == scores
    assert rouge_scores("The cats were running", "the cat runs", use_stemmer=False)["rouge1"] == pytest.approx(
        {"p": 1 / 4, "r": 1 / 3, "f": 2 / 7})

    # prediction first, reference second: a short prediction has full precision and partial recall
    scores = rouge_scores("a b", "a b c d")
    assert scores["rouge1"] == pytest.approx({"p": 1.0, "r": 0.5, "f": 2 / 3})
    assert scores["rouge2"] == pytest.approx({"p": 1.0, "r": 1 / 3, "f": 0.5})

    assert all(s == {"p": 0.0, "r": 0.0, "f": 0.0} for s in rouge_scores("", "").values())
    assert all(s == {"p": 0.0, "r": 0.0, "f": 0.0} for s in rouge_scores(None, "text").values())
    assert set(rouge_scores("x", "x")) == set(ROUGE_TYPES) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_rouge_1_2_l_equal_rouge_score_on_the_raw_texts():
    """Splitting into sentences changes nothing but ROUGE-Lsum: newlines are not tokens."""
    for prediction, reference in _pairs():
        ours = rouge_scores(prediction, reference)
        theirs = _reference_scores([prediction], [reference], types=("rouge1", "rouge2", "rougeL"))
        assert {key: ours[key] for key in theirs} == theirs, (prediction, reference)


# ---- SQuAD ----------------------------------------------------------------------------------------------
def _official_normalize(s):
    """normalize_answer of the official SQuAD v2.0 evaluation script, as published."""
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return " ".join(remove_articles(remove_punc(s.lower())).split())


def _official_f1(a_gold, a_pred):
    gold_toks = _official_normalize(a_gold).split() if a_gold else []
    pred_toks = _official_normalize(a_pred).split() if a_pred else []
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _official_scores(pred, answers):
    golds = [a for a in answers if _official_normalize(a)] or [""]
    return (max(int(_official_normalize(g) == _official_normalize(pred)) for g in golds),
            max(_official_f1(g, pred) for g in golds))


def test_normalize_answer():
    assert normalize_answer("The  Theater, an ANT a") == "theater ant"  # articles only as whole words
    assert normalize_answer("U.S.-based (1990s)!") == "usbased 1990s"
    assert normalize_answer(None) == ""


def test_squad_hand_cases():
    assert squad_exact_match("The Denver Broncos", ["Denver Broncos"]) == 1.0  # article
    assert squad_exact_match("broncos!", ["Broncos"]) == 1.0  # punctuation and case
    assert squad_exact_match("Denver", ["Denver Broncos"]) == 0.0
    # partial overlap: p = 2/3, r = 1
    assert squad_f1("Denver Broncos team", ["the Denver Broncos"]) == pytest.approx(0.8)
    assert squad_exact_match("Denver Broncos team", ["the Denver Broncos"]) == 0.0
    # token bags: a repeated token counts as often as it occurs in both
    assert squad_f1("x y y", ["x y"]) == pytest.approx(0.8)
    # several golds: the best one counts
    assert squad_f1("Broncos", ["Carolina Panthers", "Denver Broncos", "Broncos"]) == 1.0
    assert squad_f1("Denver", ["Carolina Panthers", "Denver Broncos"]) == pytest.approx(2 / 3)
    assert squad_f1("Panthers", ["Denver Broncos"]) == 0.0
    # unanswerable: only the empty answer is right
    for empty in ("", None, "  ", "the"):
        assert squad_exact_match(empty, []) == 1.0 and squad_f1(empty, []) == 1.0
    assert squad_exact_match("Broncos", []) == 0.0 and squad_f1("Broncos", []) == 0.0
    # golds that normalize to nothing are dropped, as in the v2.0 script
    assert squad_f1("", ["The", "!"]) == 1.0
    # an answerable question left unanswered scores 0
    assert squad_exact_match(None, ["Denver"]) == 0.0 and squad_f1("", ["Denver"]) == 0.0


def test_squad_equals_official_script_on_random_answers():
    rng = random.Random(7)
    vocab = ["the", "a", "An", "Denver", "broncos", "Broncos.", "(1990)", "1990", "U.S.", "won", "won!", "—", "é", ""]
    for _ in range(500):
        pred = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 5)))
        golds = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(0, 3))]
        exact, f1 = _official_scores(pred, golds)
        assert squad_exact_match(pred, golds) == exact, (pred, golds)
        assert squad_f1(pred, golds) == pytest.approx(f1, abs=1e-12), (pred, golds)


# ---- registered scorers ---------------------------------------------------------------------------------
def _resolve(block: str):
    return registry.resolve(Config().from_str(f"[scorer]\n{block}"))["scorer"]


def _summary_example(text, gold, predicted=None, attr="summary"):
    doc = NLP.make_doc(text)
    ref = doc.copy()
    ref._.summary = gold
    setattr(doc._, attr, predicted)
    return Example(doc, ref)


def test_summary_scorer_means_f_over_examples_with_a_gold_summary():
    scorer = _resolve('@scorers = "spacy_led.summary_scorer.v1"')
    examples = [
        _summary_example("doc one", "the cat sat on the mat", "the cat lay on the mat"),
        _summary_example("doc two", "a b c d", "a b"),
        _summary_example("doc three", "some gold", None),  # no prediction counts as ""
        _summary_example("doc four", None, "not scored: no gold"),
    ]
    scores = scorer(examples)
    assert set(scores) == {"summary_rouge1_f", "summary_rouge2_f", "summary_rougeL_f", "summary_rougeLsum_f"}
    assert scores["summary_rouge1_f"] == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)
    assert scores["summary_rouge2_f"] == pytest.approx((3 / 5 + 0.5 + 0) / 3)
    assert scores["summary_rougeL_f"] == pytest.approx((5 / 6 + 2 / 3 + 0) / 3)
    assert scores["summary_rougeLsum_f"] == scores["summary_rougeL_f"]  # one sentence each
    assert scorer([_summary_example("x", None, "y")]) == dict.fromkeys(scores, None)


def test_summary_scorer_reads_the_components_summary_attr():
    scorer = _resolve('@scorers = "spacy_led.summary_scorer.v1"')
    examples = [_summary_example("doc", "a b c d", "a b c d", attr="abstract")]
    # spaCy's Pipe.score passes the component's cfg, which names the attribute the summarizer writes
    assert scorer(examples, summary_attr="abstract", num_beams=4)["summary_rouge1_f"] == 1.0
    assert scorer(examples)["summary_rouge1_f"] == 0.0  # default: doc._.summary, unset here
    explicit = _resolve('@scorers = "spacy_led.summary_scorer.v1"\nattr = "abstract"')
    assert explicit(examples, summary_attr="summary")["summary_rouge1_f"] == 1.0


def test_summary_scorer_stems_unless_told_not_to():
    examples = [_summary_example("doc", "The cats were running", "the cat runs")]
    stemmed = _resolve('@scorers = "spacy_led.summary_scorer.v1"')(examples)
    unstemmed = _resolve('@scorers = "spacy_led.summary_scorer.v1"\nuse_stemmer = false')(examples)
    assert stemmed["summary_rouge1_f"] == pytest.approx(6 / 7)
    assert unstemmed["summary_rouge1_f"] == pytest.approx(2 / 7)


def _qa_example(text, gold_answers, predicted):
    doc = NLP.make_doc(text)
    ref = doc.copy()
    ref._.gold_answers = gold_answers
    doc._.answers = {q: (doc.char_span(*chars, alignment_mode="expand") if chars else None)
                     for q, chars in predicted.items()}
    return Example(doc, ref)


def test_qa_scorer_means_over_every_question():
    scorer = _resolve('@scorers = "spacy_led.qa_scorer.v1"')
    text = "The Denver Broncos beat the Carolina Panthers in 2016."
    examples = [
        _qa_example(
            text,
            {"Who won?": ["Denver Broncos", "the Broncos"],  # predicted "The Denver Broncos": EM 1
             "Who lost?": ["Carolina Panthers"],  # predicted "Panthers": F1 2/3
             "When?": ["2016"],  # missing from the prediction: 0
             "Who sang?": []},  # unanswerable, predicted None: 1
            {"Who won?": (0, 18), "Who lost?": (37, 45), "Who sang?": None},
        ),
        _qa_example("Nothing here.", {"Where?": []}, {"Where?": (0, 7)}),  # answered the unanswerable: 0
    ]
    scores = scorer(examples, spans_key="answers")
    assert scores["qa_exact_match"] == pytest.approx((1 + 0 + 0 + 1 + 0) / 5)
    assert scores["qa_f1"] == pytest.approx((1 + 2 / 3 + 0 + 1 + 0) / 5)
    assert scorer([]) == {"qa_exact_match": None, "qa_f1": None}


def test_cats_scorer_takes_multi_label_from_the_component_cfg():
    scorer = _resolve('@scorers = "spacy_led.cats_scorer.v1"')
    examples = []
    for gold, pred in (({"A": 1.0, "B": 1.0}, {"A": 0.9, "B": 0.6}), ({"A": 0.0, "B": 1.0}, {"A": 0.7, "B": 0.2})):
        doc = NLP.make_doc("text")
        ref = doc.copy()
        ref.cats, doc.cats = gold, pred
        examples.append(Example(doc, ref))
    # Pipe.score passes the whole cfg, multi_label included (which breaks spaCy's spacy.textcat_scorer.v2)
    multi = scorer(examples, labels=("A", "B"), multi_label=True, threshold=0.5, overflow="chunk")
    # A: tp 1, fp 1 -> f 2/3; B: tp 1, fn 1 -> f 2/3
    assert multi["cats_macro_f"] == pytest.approx(2 / 3)
    assert multi["cats_score_desc"] == "macro AUC"  # spaCy's headline score for multi-label
    single = scorer(examples, labels=("A", "B"), multi_label=False)
    assert single["cats_score_desc"] == "macro F"
    assert single["cats_micro_f"] == pytest.approx(0.5)  # argmax A, A vs gold A(+B), B
