"""The three components with runtime = "onnx" give the annotations they give on torch, remember the setting
when saved, and refuse a missing runtime, a missing or foreign export with a message saying what to do."""
import pytest
import spacy

from spacy_led.onnx import OnnxExportError, export_onnx

from conftest import SAMPLE_TEXTS

import onnxruntime  # noqa: F401  (the `test` extra installs it: a missing install fails here, it is not skipped)

QUESTIONS = ["Who signed the contract?", "When did the dispute begin?"]


def _annotations(nlp, texts):
    """(exact part, scores) per Doc: summaries, best labels and answer spans must be equal; scores (summary
    score, category scores, answer scores) equal up to float rounding."""
    exact, scores = [], []
    for doc in nlp.pipe(texts):
        answers = list(doc.spans.get("answers", []))
        exact.append((doc._.summary, doc._.label, sorted(doc.cats),
                      [(s.start_char, s.end_char, s._.question) for s in answers]))
        scores.append([doc._.summary_score or 0.0, *(doc.cats[k] for k in sorted(doc.cats)),
                       *(s._.answer_score for s in answers)])
    return exact, scores


def _assert_same(actual, expected):
    assert actual[0] == expected[0]
    for got, want in zip(actual[1], expected[1], strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


@pytest.fixture(scope="module")
def exported_pipeline(summarizer_checkpoint, classifier_checkpoint, qa_checkpoint, tmp_path_factory):
    """A pipeline of the three components saved to disk and exported through its directory."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 2,
                                           "max_summary_length": 12})
    nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint)})
    nlp.add_pipe("led_qa", config={"checkpoint": str(qa_checkpoint), "questions": QUESTIONS})
    saved = tmp_path_factory.mktemp("pipeline")
    nlp.to_disk(saved)
    out = tmp_path_factory.mktemp("pipeline_onnx")
    written = export_onnx(saved, out)
    assert sorted(p.name for p in written) == ["led_classifier", "led_qa", "led_summarizer"]
    return nlp, saved, out


def test_components_annotate_the_same_on_onnxruntime(exported_pipeline, tmp_path):
    nlp, saved, out = exported_pipeline
    texts = SAMPLE_TEXTS
    expected = _annotations(nlp, texts)
    onnx_nlp = spacy.load(saved)
    for name in ("led_summarizer", "led_classifier", "led_qa"):
        onnx_nlp.get_pipe(name).cfg.update(runtime="onnx", onnx_path=str(out / name))
    _assert_same(_annotations(onnx_nlp, texts), expected)
    assert any(summary for summary, *_ in expected[0]) and any(answers for *_, answers in expected[0])
    # The setting travels with the saved pipeline.
    onnx_nlp.to_disk(tmp_path / "onnx_pipeline")
    reloaded = spacy.load(tmp_path / "onnx_pipeline")
    assert reloaded.get_pipe("led_qa").cfg["runtime"] == "onnx"
    _assert_same(_annotations(reloaded, texts[:2]), _annotations(nlp, texts[:2]))


def test_bad_onnx_settings_say_what_to_do(exported_pipeline, summarizer_checkpoint):
    nlp, saved, out = exported_pipeline
    with pytest.raises(ValueError, match="needs onnx_path"):
        spacy.blank("en").add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint),
                                                              "runtime": "onnx"})
    with pytest.raises(ValueError, match="not one of"):
        spacy.blank("en").add_pipe("led_summarizer", config={"runtime": "tensorflow"})
    for name, wrong in (("led_summarizer", "led_classifier"), ("led_qa", "led_summarizer"), ("led_summarizer", "nowhere")):
        other = spacy.load(saved)
        other.get_pipe(name).cfg.update(runtime="onnx", onnx_path=str(out / wrong))
        with pytest.raises(OnnxExportError):
            other(SAMPLE_TEXTS[0])
