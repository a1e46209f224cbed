"""The spaCy components on tiny random checkpoints: their outputs equal the torch model's on the same ids and
global mask, long documents follow ``overflow``, batches equal one-by-one, and pipelines round-trip to disk."""
import logging

import pytest
import spacy
import torch
from spacy.tokens import Doc

from spacy_led.pipes import base
from spacy_led.pipes.base import DocumentTooLong
from spacy_led.tokenizer import LEDTokenizer

from conftest import LONG_TEXT, SAMPLE_TEXTS, torch_threads

TEXTS = SAMPLE_TEXTS


@pytest.fixture(scope="module")
def summarizer_nlp(summarizer_checkpoint):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 2,
                                           "max_summary_length": 12})
    return nlp


def _reference_generate(module, tokenizer, text, global_positions=(0,), **kwargs):
    ids = torch.tensor([tokenizer.encode(text)])
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
    pipe.load()
    n_pieces = len(pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False))
    assert n_pieces > 3 * 38
    with pytest.raises(DocumentTooLong, match=rf"{n_pieces} BPE pieces .* at most 38"):
        nlp(LONG_TEXT)

    pipe.cfg["overflow"] = "truncate"
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        truncated = nlp(LONG_TEXT)._.summary
    assert f"{n_pieces - 38} pieces" in caplog.text
    first_window_text = LONG_TEXT[: pipe.tokenizer.encode_with_offsets(LONG_TEXT, add_special_tokens=False).offsets[37][1]]
    assert truncated == _reference_generate(pipe.module, pipe.tokenizer, first_window_text, num_beams=1, max_length=8)

    pipe.cfg["overflow"] = "chunk"
    windows = pipe._windows(0, nlp.make_doc(LONG_TEXT))
    assert len(windows) == -(-n_pieces // 38)
    covered = [piece for w in windows for piece in w.ids[1:-1]]
    assert covered == pipe.tokenizer.encode(LONG_TEXT, add_special_tokens=False)  # nothing lost, no overlap
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
    docs = list(nlp.pipe(TEXTS[:3]))
    assert pipe.labels == ("science", "sports", "law")  # read from the checkpoint by the first batch
    for doc, text in zip(docs, TEXTS[:3]):
        ids = torch.tensor([pipe.tokenizer.encode(text)])
        glob = torch.zeros_like(ids)
        glob[0, 0] = 1
        with torch.no_grad():
            probs = torch.softmax(pipe.module(input_ids=ids, global_attention_mask=glob).logits, -1)[0]
        assert list(doc.cats) == ["science", "sports", "law"]
        assert torch.allclose(torch.tensor(list(doc.cats.values())), probs, atol=1e-6)
        assert doc._.label == max(doc.cats, key=doc.cats.get)
    assert len({tuple(d.cats.values()) for d in docs}) == 3


def test_classifier_reads_documents_longer_than_the_decoder(classifier_checkpoint):
    """The decoder has 64 positions; a document of a few hundred pieces is still classified, whole: the
    decoder runs over segments of 64 positions, positions restarting, each cross-attending the whole encoder
    output, and the head reads the state at the last </s>. Computed here step by step from the modules."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint), "overflow": "error"})
    pipe.load()
    text = LONG_TEXT * 2
    ids = torch.tensor([pipe.tokenizer.encode(text)])  # <s> pieces </s>: one input, nothing cut
    length, limit = ids.shape[1], pipe.module.config.max_decoder_position_embeddings
    assert limit == 64 and length > 3 * limit
    glob = torch.zeros_like(ids)
    glob[0, 0] = 1
    led = pipe.module.led
    with torch.no_grad():
        encoded = led.encoder(input_ids=ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob)
        decoder_ids = torch.cat([torch.tensor([[pipe.module.config.decoder_start_token_id]]), ids[:, :-1]], dim=1)
        last_segment = (length - 1) // limit * limit  # the segment holding the last </s>, decoded alone
        states = led.decoder(decoder_ids[:, last_segment:], encoded.last_hidden_state,
                             encoder_attention_mask=torch.ones_like(ids)).last_hidden_state
        logits = pipe.module.classification_head(states[0, length - 1 - last_segment])
    expected = torch.softmax(logits, -1)
    cats = nlp(text).cats
    assert list(cats) == ["science", "sports", "law"]
    assert torch.allclose(torch.tensor(list(cats.values())), expected, atol=1e-5)


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
        q_ids = pipe.tokenizer.encode(question, add_special_tokens=False)
        enc = pipe.tokenizer.encode_with_offsets(LONG_TEXT, add_special_tokens=False)
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


# ---- loading, checkpoint checks, batches with failures ----------------------------------------------------


def test_reading_the_pipe_loads_nothing_until_load(classifier_checkpoint):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint)})
    assert pipe.tokenizer is None and pipe.labels == ()
    with pytest.raises(ValueError, match=r"has not read its checkpoint .* call its load\(\)"):
        pipe.max_input_length
    assert pipe.tokenizer is None  # the failed getter did not load either
    pipe.load()
    assert pipe.labels == ("science", "sports", "law") and pipe.max_input_length == 512
    module = pipe.module
    pipe.load()
    assert pipe.module is module  # loaded once


def test_a_summarizer_on_a_classification_checkpoint_fails_at_add_pipe(classifier_checkpoint):
    from spacy_led.modeling.checkpoint import CheckpointError

    nlp = spacy.blank("en")
    with pytest.raises(CheckpointError, match=rf"'led_summarizer' needs an LED trained to generate text.*"
                                              rf"{classifier_checkpoint} holds LEDForSequenceClassification"):
        nlp.add_pipe("led_summarizer", config={"checkpoint": str(classifier_checkpoint)})


@pytest.mark.parametrize("factory, head", [("led_classifier", "classification head"), ("led_qa", "question-answering head")])
def test_a_head_missing_from_the_checkpoint_fails_before_predicting_and_is_created_by_initialize(
    summarizer_checkpoint, factory, head
):
    from spacy.training import Example

    from spacy_led.modeling.checkpoint import CheckpointError

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config={"checkpoint": str(summarizer_checkpoint), "questions": ["Who?"]}
                        if factory == "led_qa" else {"checkpoint": str(summarizer_checkpoint)})
    with pytest.raises(CheckpointError, match=rf"needs a {head} .* {summarizer_checkpoint} holds "
                                              rf"LEDForConditionalGeneration without one"):
        nlp(TEXTS[0])
    reference = nlp.make_doc(TEXTS[0])
    reference.cats = {"legal": 1.0, "other": 0.0}
    nlp.initialize(lambda: [Example(nlp.make_doc(TEXTS[0]), reference)])  # fine-tuning: a fresh head
    doc = nlp(TEXTS[0])
    if factory == "led_classifier":
        assert pipe.labels == ("legal", "other") and set(doc.cats) == {"legal", "other"}
    else:
        assert list(doc._.answers) == ["Who?"]


def test_a_classifier_configured_with_other_labels_than_its_checkpoint_head_says_so(classifier_checkpoint):
    from spacy_led.modeling.checkpoint import CheckpointError

    nlp = spacy.blank("en")
    nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint), "labels": ["a", "b"]})
    with pytest.raises(CheckpointError, match=r"2 labels \['a', 'b'\].* has 3 \(\['science', 'sports', 'law'\]\)"):
        nlp(TEXTS[0])


def test_a_document_failing_before_the_model_leaves_the_batch_one_model_pass(summarizer_checkpoint, monkeypatch):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "max_length": 60,
                                                  "overflow": "error", "num_beams": 1, "max_summary_length": 8})
    expected = [nlp(text)._.summary for text in TEXTS[:3]]
    calls = []
    run_batch = pipe._run_batch
    monkeypatch.setattr(pipe, "_run_batch", lambda windows: calls.append(len(windows)) or run_batch(windows))
    failures = []
    nlp.set_error_handler(lambda name, proc, docs, err: failures.append((docs[0].text, type(err))))
    docs = list(nlp.pipe([TEXTS[0], LONG_TEXT, TEXTS[1], TEXTS[2]], batch_size=4))
    assert failures == [(LONG_TEXT, DocumentTooLong)]
    assert calls == [3]  # the three other documents in one model batch, not one by one
    assert [d._.summary for d in docs] == [expected[0], None, expected[1], expected[2]]


def test_a_model_error_falls_back_to_one_document_at_a_time(summarizer_checkpoint, monkeypatch):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 1,
                                                  "max_summary_length": 8})
    expected = [nlp(text)._.summary for text in TEXTS[:3]]
    run_batch = pipe._run_batch

    def fails_on_the_second_document(windows):
        if any(w.doc_index == 1 for w in windows):
            raise RuntimeError("model failed")
        return run_batch(windows)

    monkeypatch.setattr(pipe, "_run_batch", fails_on_the_second_document)
    failures = []
    nlp.set_error_handler(lambda name, proc, docs, err: failures.append((docs[0].text, str(err))))
    docs = list(nlp.pipe(TEXTS[:3], batch_size=3))
    assert failures == [(TEXTS[1], "model failed")]
    assert [d._.summary for d in docs] == [expected[0], None, expected[2]]


def test_a_text_the_tokenizer_refuses_fails_alone(summarizer_checkpoint, monkeypatch):
    """The pipe tokenizes a whole minibatch in one call; when that call fails, each document is tokenized
    alone, so only the one the tokenizer refuses fails and the others get the summaries they get alone."""
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 1,
                                                  "max_summary_length": 8})
    expected = [nlp(text)._.summary for text in TEXTS[:3]]
    encode_pieces, batch_sizes = base.encode_pieces, []

    def refuses_the_second_text(tokenizer, texts):
        assert tokenizer is pipe.tokenizer
        batch_sizes.append(len(texts))
        if TEXTS[1] in texts:
            raise ValueError("text refused")
        return encode_pieces(tokenizer, texts)

    monkeypatch.setattr(base, "encode_pieces", refuses_the_second_text)
    failures = []
    nlp.set_error_handler(lambda name, proc, docs, err: failures.append((docs[0].text, str(err))))
    docs = list(nlp.pipe(TEXTS[:3], batch_size=3))
    assert batch_sizes == [3, 1, 1, 1]  # the minibatch in one call, then each text alone
    assert failures == [(TEXTS[1], "text refused")]
    assert [d._.summary for d in docs] == [expected[0], None, expected[2]]


IMPORT_THEN_FORK = """
import os, torch
torch.set_num_threads(3)
import spacy, spacy_led.pipes.base, spacy_led.pipes.summarizer
nlp = spacy.blank("en")
pid = os.fork()
if pid == 0:
    os._exit(torch.get_num_threads())
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_importing_the_package_leaves_forked_processes_alone():
    """No fork hook at import: a child forked by the user's own code keeps the parent's torch threads."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", IMPORT_THEN_FORK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_n_process_workers_use_one_torch_thread(summarizer_checkpoint):
    from spacy.language import Language

    if not Language.has_factory("test_record_torch_threads"):
        @Language.component("test_record_torch_threads")
        def record_torch_threads(doc):
            doc.user_data["torch_threads"] = torch.get_num_threads()
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "num_beams": 1,
                                           "max_summary_length": 6})
    nlp.add_pipe("test_record_torch_threads")
    with torch_threads(2):
        docs = list(nlp.pipe(TEXTS[:4], n_process=2, batch_size=2))
        assert [d.user_data["torch_threads"] for d in docs] == [1, 1, 1, 1]
        assert all(d._.summary for d in docs)
        assert nlp(TEXTS[0]).user_data["torch_threads"] == 2  # the parent keeps its setting
