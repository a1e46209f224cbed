"""`spacy evaluate` on saved pipelines with gold data in DocBins (store_user_data=True)."""
import pytest
import spacy
from spacy.cli.evaluate import evaluate
from spacy.tokens import DocBin

from spacy_led.extensions import ensure_extensions

from conftest import LONG_TEXT

TEXTS = ["The court reviewed the contract. Both parties agreed.", LONG_TEXT]


def test_spacy_evaluate_scores_summaries(summarizer_checkpoint, tmp_path):
    """Gold summaries that are the model's summary (n ROUGE tokens) plus five words it does not contain:
    precision 1, recall n / (n + 5), so ROUGE-1 and ROUGE-L F are 2n / (2n + 5) and ROUGE-2 F (n - 1 of the
    gold's n + 4 bigrams) is 2(n - 1) / (2n + 3), averaged over the documents."""
    import re

    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 1,
                                           "max_summary_length": 10})
    nlp.to_disk(tmp_path / "model")
    ensure_extensions()
    extra = "the parties signed the contract"
    docs, expected = [], {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for text in TEXTS:
        prediction = nlp(text)._.summary
        tokens = re.findall(r"[a-z0-9]+", prediction.lower())  # rouge-score's tokens
        assert tokens and not set(tokens) & {"the", "parti", "parties", "sign", "signed", "contract"}
        n = len(tokens)
        doc = nlp.make_doc(text)
        doc._.summary = f"{prediction} {extra}"
        docs.append(doc)
        expected["rouge1"] += 2 * n / (2 * n + 5) / len(TEXTS)
        expected["rougeL"] += 2 * n / (2 * n + 5) / len(TEXTS)
        expected["rouge2"] += 2 * (n - 1) / (2 * n + 3) / len(TEXTS)
    DocBin(docs=docs, store_user_data=True).to_disk(tmp_path / "dev.spacy")
    scores = evaluate(str(tmp_path / "model"), str(tmp_path / "dev.spacy"))
    assert 0 < expected["rouge1"] < 1
    for key, value in expected.items():
        assert scores[f"summary_{key}_f"] == pytest.approx(value, abs=1e-9)


def test_spacy_evaluate_answers_the_gold_questions(qa_checkpoint, tmp_path):
    """DocBin corpora lose the predicted Doc's questions; the QA component answers the reference's."""
    nlp = spacy.blank("en")
    nlp.add_pipe("led_qa", config={"checkpoint": str(qa_checkpoint), "no_answer_threshold": None})
    nlp.to_disk(tmp_path / "model")
    question = "Who signed first?"
    probe = nlp.make_doc(LONG_TEXT)
    probe._.questions = [question]
    predicted = nlp(probe)._.answers[question].text
    gold = nlp.make_doc(LONG_TEXT)
    gold._.questions = [question]
    gold._.gold_answers = {question: [predicted]}
    DocBin(docs=[gold], store_user_data=True).to_disk(tmp_path / "dev.spacy")
    scores = evaluate(str(tmp_path / "model"), str(tmp_path / "dev.spacy"))
    assert scores["qa_exact_match"] == 1.0 and scores["qa_f1"] == 1.0
