"""`global_attention_spans_key`: each component can store the Doc tokens its strategy gave global attention as
a span group, which displaCy's span style renders and which survives Doc and DocBin serialization."""
import re

import pytest
import spacy
from spacy import displacy
from spacy.tokens import Doc, DocBin

TEXT = "The court met in March. Both parties agreed on new terms. Who signed the final contract? Nobody did."
KEY = "led_global"


def _pipeline(component, checkpoint, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(component, config={"checkpoint": str(checkpoint), **config})
    return nlp


def _groups(doc):
    return [(span.text, span.label_) for span in doc.spans[KEY]]


def test_summarizer_stores_the_sentence_starts_it_attended_globally(summarizer_checkpoint):
    nlp = _pipeline("led_summarizer", summarizer_checkpoint, max_summary_length=4, global_attention_spans_key=KEY,
                    global_attention={"@misc": "spacy_led.sentence_starts.v1"})
    doc = nlp(TEXT)
    assert _groups(doc) == [("The", "GLOBAL"), ("Both", "GLOBAL"), ("Who", "GLOBAL"), ("Nobody", "GLOBAL")]
    assert doc.spans[KEY].attrs == {"bos": True}

    for restored in (Doc(nlp.vocab).from_bytes(doc.to_bytes()),
                     next(DocBin(docs=[doc]).from_bytes(DocBin(docs=[doc]).to_bytes()).get_docs(nlp.vocab))):
        assert _groups(restored) == _groups(doc)
        assert [(s.start, s.end) for s in restored.spans[KEY]] == [(s.start, s.end) for s in doc.spans[KEY]]
        assert restored.spans[KEY].attrs == {"bos": True}

    html = displacy.render(doc, style="span", options={"spans_key": KEY})
    assert len(re.findall(r">\s*GLOBAL\s*<", html)) == 4  # one label per span


def test_qa_stores_each_question_of_the_doc_as_one_span(qa_checkpoint):
    nlp = _pipeline("led_qa", qa_checkpoint, global_attention_spans_key=KEY)
    doc = nlp(TEXT)  # no doc._.questions: the Doc's own question sentences are asked and attended globally
    assert _groups(doc) == [("Who signed the final contract?", "GLOBAL")]


def test_first_token_strategy_leaves_an_empty_group_with_bos(classifier_checkpoint):
    nlp = _pipeline("led_classifier", classifier_checkpoint, global_attention_spans_key=KEY)
    doc = nlp(TEXT)
    assert list(doc.spans[KEY]) == [] and doc.spans[KEY].attrs == {"bos": True}


def test_no_span_group_unless_asked(classifier_checkpoint):
    nlp = _pipeline("led_classifier", classifier_checkpoint)
    assert nlp.get_pipe("led_classifier").cfg["global_attention_spans_key"] is None
    doc = nlp(TEXT)
    assert doc.cats and KEY not in doc.spans


@pytest.mark.parametrize("component", ["led_summarizer", "led_classifier", "led_qa"])
def test_the_setting_is_saved_with_the_pipeline(component, summarizer_checkpoint, classifier_checkpoint,
                                                 qa_checkpoint, tmp_path):
    checkpoint = {"led_summarizer": summarizer_checkpoint, "led_classifier": classifier_checkpoint,
                  "led_qa": qa_checkpoint}[component]
    nlp = _pipeline(component, checkpoint, global_attention_spans_key=KEY)
    nlp.to_disk(tmp_path / "nlp")
    loaded = spacy.load(tmp_path / "nlp")
    assert KEY in loaded(TEXT).spans
