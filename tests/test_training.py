"""The components learn: ``update`` lowers the loss on a tiny batch, from scratch and from a checkpoint."""
import pytest
import spacy
import torch
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Adam

TINY_ARCH = {
    "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "attention_heads": 4, "ffn_dim": 64,
    "attention_window": 16, "max_encoder_position_embeddings": 256, "max_decoder_position_embeddings": 64,
    "dropout": 0.0,
}
DOCS = [
    ("The court ruled on the contract dispute between the two firms.", "court ruling", "law"),
    ("The striker scored twice and the team won the league final.", "team wins final", "sports"),
    ("Researchers measured the enzyme and published the protein study.", "protein study", "science"),
    ("The judge dismissed the appeal and the lawyers left the court.", "appeal dismissed", "law"),
]


def _train(nlp, name, examples, steps=25, lr=3e-3):
    torch.manual_seed(0)
    pipe = nlp.get_pipe(name)
    optimizer = Adam(lr)
    nlp.initialize(lambda: examples, sgd=optimizer) if not pipe.tokenizer else None
    first, _ = pipe.get_loss(examples)
    for _ in range(steps):
        pipe.update(examples, sgd=optimizer)
    last, _ = pipe.get_loss(examples)
    return first, last


def _nlp(factory, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, config={"model": {"@architectures": "spacy_led.LED.v1", **TINY_ARCH,
                                            "task": config.pop("task")}, **config})
    return nlp


def test_summarizer_learns_from_scratch_with_a_tokenizer_learnt_from_the_data():
    nlp = _nlp("led_summarizer", task="generation", num_beams=1, max_summary_length=32)
    examples = []
    for text, summary, _ in DOCS:
        ref = nlp.make_doc(text)
        ref._.summary = summary
        examples.append(Example(nlp.make_doc(text), ref))
    first, last = _train(nlp, "led_summarizer", examples, steps=80, lr=5e-3)
    assert last < 0.5 * first
    assert nlp.get_pipe("led_summarizer").tokenizer.vocab_size > 261  # learnt merges on top of the bytes
    assert nlp(DOCS[1][0])._.summary == "team wins final"  # memorised its training pair


def test_classifier_learns_labels_found_in_the_data():
    nlp = _nlp("led_classifier", task="classification")
    examples = []
    for text, _, label in DOCS:
        ref = nlp.make_doc(text)
        ref.cats = {cat: float(cat == label) for cat in ("law", "science", "sports")}
        examples.append(Example(nlp.make_doc(text), ref))
    first, last = _train(nlp, "led_classifier", examples)
    assert nlp.get_pipe("led_classifier").labels == ("law", "science", "sports")
    assert last < 0.3 * first
    assert [nlp(text)._.label for text, _, _ in DOCS] == [label for _, _, label in DOCS]


def test_multi_label_classifier_learns():
    nlp = _nlp("led_classifier", task="classification", multi_label=True, labels=["law", "money"])
    examples = []
    for text, cats in [("The court fined the bank a million dollars.", {"law": 1.0, "money": 1.0}),
                       ("The court heard the appeal.", {"law": 1.0, "money": 0.0}),
                       ("Stocks rose and the dollar fell.", {"law": 0.0, "money": 1.0})]:
        ref = nlp.make_doc(text)
        ref.cats = cats
        examples.append(Example(nlp.make_doc(text), ref))
    first, last = _train(nlp, "led_classifier", examples)
    assert last < 0.3 * first
    cats = nlp("The court heard the appeal.").cats
    assert cats["law"] > 0.5 > cats["money"]


def test_question_answering_learns_answers_and_unanswerable_questions():
    nlp = _nlp("led_qa", task="question_answering", no_answer_threshold=0.0)
    examples = []
    for text, question, answer in [
        ("Alice signed the contract in Paris. Bob paid later.", "Who signed the contract?", "Alice"),
        ("The meeting was held in Zurich on Monday.", "Where was the meeting?", "Zurich"),
        ("The weather was mild all week.", "Who won the match?", None),
    ]:
        ref = nlp.make_doc(text)
        ref._.questions = [question]
        start = text.find(answer) if answer else -1
        ref._.answers = {question: ref.char_span(start, start + len(answer)) if answer else None}
        pred = nlp.make_doc(text)
        pred._.questions = [question]
        examples.append(Example(pred, ref))
    first, last = _train(nlp, "led_qa", examples, steps=40)
    assert last < 0.3 * first
    doc = nlp(examples[0].predicted.copy())
    assert doc._.answers["Who signed the contract?"].text == "Alice"
    doc = nlp(examples[2].predicted.copy())
    assert doc._.answers["Who won the match?"] is None


def test_fine_tuning_a_checkpoint_lowers_the_loss(summarizer_checkpoint):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint)})
    examples = []
    for text, summary, _ in DOCS:
        ref = nlp.make_doc(text)
        ref._.summary = summary
        examples.append(Example(nlp.make_doc(text), ref))
    first, last = _train(nlp, "led_summarizer", examples, steps=25, lr=3e-3)
    assert last < 0.6 * first


def test_gradients_accumulate_until_finish_update():
    """spaCy's accumulate_gradient calls update(sgd=None) several times, then finish_update once."""
    nlp = _nlp("led_summarizer", task="generation")  # dropout 0: two passes give the same gradient
    ref = nlp.make_doc(DOCS[0][0])
    ref._.summary = DOCS[0][1]
    examples = [Example(nlp.make_doc(DOCS[0][0]), ref)]
    nlp.initialize(lambda: examples)
    pipe = nlp.get_pipe("led_summarizer")
    weight = pipe.module.led.encoder.layers[0].fc1.weight
    weight.grad = None
    before = weight.detach().clone()
    pipe.update(examples)
    once = weight.grad.detach().clone()
    pipe.update(examples)
    assert torch.equal(weight.detach(), before)  # no step without an optimizer
    assert torch.allclose(weight.grad, 2 * once, rtol=1e-4, atol=1e-7)
    pipe.finish_update(Adam(1e-3))
    assert not torch.equal(weight.detach(), before)
    assert float(weight.grad.abs().max()) == 0.0
