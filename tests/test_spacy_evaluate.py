"""`spacy evaluate` on saved pipelines with gold data in DocBins (store_user_data=True)."""
import spacy
from spacy.cli.evaluate import evaluate
from spacy.tokens import DocBin

from spacy_led.extensions import ensure_extensions

from conftest import LONG_TEXT

TEXTS = ["The court reviewed the contract. Both parties agreed.", LONG_TEXT]


def test_spacy_evaluate_scores_summaries(summarizer_checkpoint, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 1,
                                           "max_summary_length": 10})
    nlp.to_disk(tmp_path / "model")
    ensure_extensions()
    docs = []
    for text in TEXTS:
        doc = nlp.make_doc(text)
        doc._.summary = nlp(text)._.summary  # gold = the model's own output: ROUGE must be 1
        docs.append(doc)
    DocBin(docs=docs, store_user_data=True).to_disk(tmp_path / "dev.spacy")
    scores = evaluate(str(tmp_path / "model"), str(tmp_path / "dev.spacy"))
    assert scores["summary_rouge1_f"] == 1.0 and scores["summary_rougeLsum_f"] == 1.0


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
