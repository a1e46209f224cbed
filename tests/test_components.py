"""The spaCy components on tiny random checkpoints: their outputs equal the torch model's on the same ids and
global mask, long documents follow ``overflow``, batches equal one-by-one, and pipelines round-trip to disk."""
import logging

import pytest
import spacy
import torch
from spacy.tokens import Doc

from spacy_led.pipes.base import DocumentTooLong
from spacy_led.tokenizer import LEDTokenizer

from conftest import LONG_TEXT

TEXTS = [
    "The court reviewed the contract. Both parties agreed.",
    "Witnesses described the café meeting in Zürich;  one said 東京 twice. 😀",
    "Short.",
    LONG_TEXT,
    "Hello world! The quick brown fox jumps over the lazy dog. Was it quick?",
]


@pytest.fixture(scope="module")
def summarizer_nlp(summarizer_checkpoint):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 2,
                                           "max_summary_length": 12})
    return nlp


def _reference_generate(module, tokenizer, text, global_positions=(0,), **kwargs):
    ids = torch.tensor([tokenizer.encode(text).ids])
    glob = torch.zeros_like(ids)
    glob[0, list(global_positions)] = 1
    out = module.generate(ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob, **kwargs)
    return tokenizer.decode(out[0].tolist(), skip_special_tokens=True).strip()


def test_summarizer_equals_the_model_on_the_same_ids(summarizer_nlp):
    pipe = summarizer_nlp.get_pipe("led_summarizer")
    doc = summarizer_nlp(TEXTS[1])
    expected = _reference_generate(pipe.module, pipe.tokenizer, TEXTS[1], num_beams=2, max_length=12)
    assert doc._.summary == expected
    assert expected  # a real, non-empty summary
    other = summarizer_nlp(TEXTS[0])._.summary
    assert other != doc._.summary  # the summary depends on the document


def test_batch_equals_one_by_one_and_keeps_order(summarizer_nlp):
    one_by_one = [summarizer_nlp(text)._.summary for text in TEXTS]
    pipe = summarizer_nlp.get_pipe("led_summarizer")
    budget = pipe.cfg["batch_token_budget"]
    pipe.cfg["batch_token_budget"] = 150  # forces several length-sorted sub-batches
    try:
        batched = [doc._.summary for doc in summarizer_nlp.pipe(TEXTS, batch_size=4)]
    finally:
        pipe.cfg["batch_token_budget"] = budget
    assert batched == one_by_one


def test_empty_and_whitespace_documents_get_empty_summaries(summarizer_nlp):
    docs = list(summarizer_nlp.pipe(["", "   \n\t ", TEXTS[0]]))
    assert [d._.summary for d in docs[:2]] == ["", ""]
    assert docs[2]._.summary


def test_overflow_modes(summarizer_checkpoint, caplog):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "max_length": 40,
                                                  "num_beams": 1, "max_summary_length": 8, "overflow": "error"})
    n_pieces = len(pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False).ids)
    assert n_pieces > 3 * 38
    with pytest.raises(DocumentTooLong, match=rf"{n_pieces} BPE pieces .* at most 38"):
        nlp(LONG_TEXT)

    pipe.cfg["overflow"] = "truncate"
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        truncated = nlp(LONG_TEXT)._.summary
    assert f"{n_pieces - 38} pieces" in caplog.text
    first_window_text = LONG_TEXT[: pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False).offsets[37][1]]
    assert truncated == _reference_generate(pipe.module, pipe.tokenizer, first_window_text, num_beams=1, max_length=8)

    pipe.cfg["overflow"] = "chunk"
    windows = pipe._windows(0, nlp.make_doc(LONG_TEXT))
    assert len(windows) == -(-n_pieces // 38)
    covered = [piece for w in windows for piece in w.ids[1:-1]]
    assert covered == pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False).ids  # nothing lost, no overlap
    chunked = nlp(LONG_TEXT)._.summary
    assert chunked.startswith(truncated) and len(chunked) > len(truncated)


def test_bad_document_does_not_take_the_batch_down(summarizer_checkpoint):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "max_length": 40,
                                           "overflow": "error", "num_beams": 1, "max_summary_length": 8})
    failures = []
    nlp.set_error_handler(lambda name, pipe, docs, err: failures.append((name, [d.text for d in docs], err)))
    docs = list(nlp.pipe(["First document.", LONG_TEXT, "Third document."]))
    assert [d.text for d in docs] == ["First document.", LONG_TEXT, "Third document."]
    assert docs[0]._.summary and docs[2]._.summary and docs[1]._.summary is None
    assert len(failures) == 1 and failures[0][1] == [LONG_TEXT] and isinstance(failures[0][2], DocumentTooLong)


def test_summarizer_round_trips_to_disk_and_bytes(summarizer_nlp, tmp_path):
    expected = [summarizer_nlp(t)._.summary for t in TEXTS[:3]]
    summarizer_nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert [loaded(t)._.summary for t in TEXTS[:3]] == expected
    pipe_bytes = summarizer_nlp.get_pipe("led_summarizer").to_bytes()
    fresh = spacy.blank("en")
    fresh.add_pipe("led_summarizer", config={"num_beams": 2, "max_summary_length": 12}).from_bytes(pipe_bytes)
    assert [fresh(t)._.summary for t in TEXTS[:3]] == expected
    # the saved pipeline holds the weights as safetensors, the tokenizer and the settings
    saved = tmp_path / "pipeline" / "led_summarizer"
    assert (saved / "tokenizer" / "vocab.json").is_file() and (saved / "led_config.json").is_file()


def test_pipe_without_model_says_what_to_do():
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer")
    with pytest.raises(ValueError, match="checkpoint"):
        nlp("Some text.")


# ---- classifier ---------------------------------------------------------------------------------------


def test_classifier_scores_equal_the_head(classifier_checkpoint):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint)})
    assert pipe.labels == ("science", "sports", "law")
    docs = list(nlp.pipe(TEXTS[:3]))
    for doc, text in zip(docs, TEXTS[:3]):
        ids = torch.tensor([pipe.tokenizer.encode(text).ids])
        glob = torch.zeros_like(ids)
        glob[0, 0] = 1
        with torch.no_grad():
            probs = torch.softmax(pipe.module(input_ids=ids, global_attention_mask=glob).logits, -1)[0]
        assert list(doc.cats) == ["science", "sports", "law"]
        assert torch.allclose(torch.tensor(list(doc.cats.values())), probs, atol=1e-6)
        assert doc._.label == max(doc.cats, key=doc.cats.get)
    assert len({tuple(d.cats.values()) for d in docs}) == 3


def test_classifier_reads_documents_longer_than_the_decoder(classifier_checkpoint):
    """The decoder has 64 positions; a document of a few hundred pieces is still classified, whole."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint), "overflow": "error"})
    text = LONG_TEXT * 2
    assert len(pipe.tokenizer.encode(text).ids) > 64 * 3
    cats = nlp(text).cats
    assert abs(sum(cats.values()) - 1) < 1e-5


# ---- question answering -------------------------------------------------------------------------------


def test_qa_answers_are_token_aligned_spans_of_the_best_pieces(qa_checkpoint):
    nlp = spacy.blank("en")
    # global attention on the question (always) and <s>; the default strategy would add the document's own
    # question sentences, which the reference below does not mark
    pipe = nlp.add_pipe("led_qa", config={"checkpoint": str(qa_checkpoint), "no_answer_threshold": None,
                                          "questions": ["Who signed first?", "Where was the meeting?"],
                                          "global_attention": {"@misc": "spacy_led.first_token.v1"}})
    doc = nlp(LONG_TEXT)
    assert set(doc._.answers) == {"Who signed first?", "Where was the meeting?"}
    for question, span in doc._.answers.items():
        assert span is not None and span.doc is doc and span._.question == question
        assert 0 < span._.answer_score <= 1
        # the head's own best span, computed directly
        q_ids = pipe.tokenizer.encode(question, add_special_tokens=False).ids
        enc = pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False)
        ids = torch.tensor([[0, *q_ids, 2, 2, *enc.ids, 2]])
        glob = torch.zeros_like(ids)
        glob[0, : len(q_ids) + 1] = 1
        with torch.no_grad():
            out = pipe.module(input_ids=ids, global_attention_mask=glob)
        first = len(q_ids) + 3
        start, end = out.start_logits[0, first:-1], out.end_logits[0, first:-1]
        best, best_pair = None, None
        for s in range(len(enc.ids)):
            for e in range(s, min(s + 30, len(enc.ids))):
                if best is None or start[s] + end[e] > best:
                    best, best_pair = start[s] + end[e], (s, e)
        s, e = best_pair
        char_start, char_end = enc.offsets[s][0], enc.offsets[e][1]
        assert span.start_char <= char_start and span.end_char >= char_end  # token-aligned, covers the pieces
        assert LONG_TEXT[char_start:char_end].strip() in span.text
    assert list(doc.spans["answers"]) == [s for s in doc._.answers.values() if s is not None]


def test_qa_questions_from_the_doc_and_detected(qa_checkpoint):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_qa", config={"checkpoint": str(qa_checkpoint), "no_answer_threshold": None})
    doc = nlp.make_doc(LONG_TEXT)
    doc._.questions = ["What did the clerk read?"]
    doc = nlp(doc)
    assert list(doc._.answers) == ["What did the clerk read?"]
    detected = nlp(LONG_TEXT)
    assert list(detected._.answers) == ["Was the payment late?"]
    answer = detected._.answers["Was the payment late?"]
    question_start = LONG_TEXT.index("Was the payment late?")
    # answered from the rest of the document, never from the question itself
    assert answer.end_char <= question_start or answer.start_char >= question_start + len("Was the payment late?")


def test_qa_no_answer_and_chunked_search(qa_checkpoint):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_qa", config={"checkpoint": str(qa_checkpoint), "questions": ["Who signed?"],
                                          "no_answer_threshold": 1e9})
    doc = nlp(LONG_TEXT)
    assert doc._.answers == {"Who signed?": None} and len(doc.spans["answers"]) == 0
    pipe.cfg.update(no_answer_threshold=None, max_length=48, chunk_overlap=8)
    windows = pipe._windows(0, nlp.make_doc(LONG_TEXT * 2))
    assert len(windows) > 3
    answer = nlp(LONG_TEXT * 2)._.answers["Who signed?"]
    assert answer is not None and answer.text.strip()


def test_installed_entry_points_find_the_factories():
    from importlib.metadata import entry_points

    factories = {ep.name: ep.value for ep in entry_points(group="spacy_factories")}
    assert factories.get("led_summarizer") == "spacy_led.pipes:make_summarizer"
    assert {"led_classifier", "led_qa"} <= set(factories)
    nlp = spacy.blank("en")
    assert nlp.add_pipe("led_summarizer").name == "led_summarizer"


def test_n_process_2_gives_the_same_output(summarizer_nlp):
    expected = [summarizer_nlp(t)._.summary for t in TEXTS[:4]]
    assert [d._.summary for d in summarizer_nlp.pipe(TEXTS[:4], n_process=2, batch_size=2)] == expected


def test_saved_pipeline_loads_without_the_checkpoint_it_was_made_from(summarizer_checkpoint, tmp_path):
    """The config still names the checkpoint; spacy.load must not need it (another machine, moved files)."""
    import shutil

    source = tmp_path / "ckpt"
    shutil.copytree(summarizer_checkpoint, source)
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(source), "num_beams": 1, "max_summary_length": 10})
    expected = nlp(TEXTS[0])._.summary
    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(source)
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded(TEXTS[0])._.summary == expected
    missing = spacy.blank("en")
    missing.add_pipe("led_summarizer", config={"checkpoint": str(source)})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        missing(TEXTS[0])
