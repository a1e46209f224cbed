"""led_summarizer with transformers' generation settings: ``generation_config`` and ``seed`` in the component
config, ``doc._.summary_score``, and the checkpoint's own generation settings kept in a saved pipeline."""
import json
import shutil

import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin

TEXTS = [
    "The court reviewed the contract. Both parties agreed.",
    "Witnesses described the café meeting in Zürich; one said the payment was late twice.",
    "Short.",
    "Hello world! The quick brown fox jumps over the lazy dog. Was it quick?",
]


def _summarizer(checkpoint, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(checkpoint), "max_summary_length": 12, **config})
    return nlp


def _direct(pipe, text, **kwargs):
    """(summary, score) of the torch model on the text's ids with global attention on <s>."""
    ids = torch.tensor([pipe.tokenizer.encode(text)])
    glob = torch.zeros_like(ids)
    glob[0, 0] = 1
    out = pipe.module.generate(ids, attention_mask=torch.ones_like(ids), global_attention_mask=glob,
                               return_dict_in_generate=True, **kwargs)
    return pipe.tokenizer.decode(out.sequences[0].tolist(), skip_special_tokens=True).strip(), float(out.sequences_scores[0])


@pytest.mark.parametrize("config, kwargs", [
    (dict(num_beams=2), dict(num_beams=2, max_length=12)),
    (dict(generation_config={"repetition_penalty": 1.5, "encoder_no_repeat_ngram_size": 2}),
     dict(repetition_penalty=1.5, encoder_no_repeat_ngram_size=2, max_length=12)),
])
def test_summary_and_score_are_the_models(summarizer_checkpoint, config, kwargs):
    nlp = _summarizer(summarizer_checkpoint, **config)
    pipe = nlp.get_pipe("led_summarizer")
    for text in TEXTS[:2]:
        doc = nlp(text)
        summary, score = _direct(pipe, text, **kwargs)
        assert doc._.summary == summary and summary
        assert doc._.summary_score == pytest.approx(score, rel=1e-6)
        assert score < 0
    plain = _direct(pipe, TEXTS[1], max_length=12)
    assert plain != _direct(pipe, TEXTS[1], **kwargs)  # the settings change the summary or its score


def test_sampling_with_a_seed_is_reproducible_and_leaves_the_global_random_state_alone(summarizer_checkpoint):
    sampling = {"do_sample": True, "top_k": 20, "temperature": 1.3}
    nlp = _summarizer(summarizer_checkpoint, generation_config=sampling, seed=7)
    state = torch.get_rng_state()
    first = [(doc._.summary, doc._.summary_score) for doc in nlp.pipe(TEXTS)]
    assert torch.equal(torch.get_rng_state(), state)
    assert [(doc._.summary, doc._.summary_score) for doc in nlp.pipe(TEXTS)] == first
    other_seed = _summarizer(summarizer_checkpoint, generation_config=sampling, seed=8)
    assert [doc._.summary for doc in other_seed.pipe(TEXTS)] != [summary for summary, _ in first]
    # One document is one batch: the summary is what generate samples after torch.manual_seed(seed).
    pipe = nlp.get_pipe("led_summarizer")
    torch.manual_seed(7)
    summary, score = _direct(pipe, TEXTS[1], max_length=12, **sampling)
    doc = nlp(TEXTS[1])
    assert (doc._.summary, doc._.summary_score) == (summary, pytest.approx(score, rel=1e-6))


@pytest.mark.parametrize("config, message", [
    (dict(generation_config={"num_beam": 3}), "does not support 'num_beam'"),
    (dict(generation_config={"typical_p": 0.5}), "does not support 'typical_p'"),
    (dict(generation_config={"top_p": 2.0}), "top_p must be between 0 and 1"),
    (dict(num_beams=2, generation_config={"num_beams": 3}), "num_beams .* given both"),
    (dict(max_summary_length=10, generation_config={"max_length": 12}), "max_summary_length \\(= max_length\\)"),
    (dict(generation_config={"num_return_sequences": 2}), "one summary per Doc"),
    (dict(seed="seven"), "seed.*'seven' is not"),
])
def test_bad_generation_settings_fail_at_add_pipe(config, message):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=message):
        nlp.add_pipe("led_summarizer", config=config)


def test_summary_score_travels_with_the_doc(summarizer_checkpoint):
    nlp = _summarizer(summarizer_checkpoint)
    doc = nlp(TEXTS[0])
    assert isinstance(doc._.summary_score, float)
    restored = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert restored._.summary_score == doc._.summary_score
    (from_docbin,) = DocBin(docs=[doc], store_user_data=True).get_docs(nlp.vocab)
    assert from_docbin._.summary_score == doc._.summary_score
    assert nlp("")._.summary_score is None  # an empty document has no summary to score


def test_saved_pipeline_keeps_the_checkpoints_generation_config(summarizer_checkpoint, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(summarizer_checkpoint, checkpoint)
    settings = json.loads((checkpoint / "generation_config.json").read_text())
    settings.update(no_repeat_ngram_size=1, repetition_penalty=1.4, num_beams=2)
    (checkpoint / "generation_config.json").write_text(json.dumps(settings))
    nlp = _summarizer(checkpoint)
    pipe = nlp.get_pipe("led_summarizer")
    expected = [(doc._.summary, doc._.summary_score) for doc in nlp.pipe(TEXTS)]
    summary, score = _direct(pipe, TEXTS[1], max_length=12)  # generate's defaults: the checkpoint's settings
    assert expected[1] == (summary, pytest.approx(score, rel=1e-5))
    assert [summary for summary, _ in expected] != [_direct(pipe, text, max_length=12, num_beams=1,
                                                            no_repeat_ngram_size=0, repetition_penalty=1.0)[0]
                                                    for text in TEXTS]  # and they matter

    nlp.to_disk(tmp_path / "pipeline")
    shutil.rmtree(checkpoint)
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("led_summarizer").module.generation_config == pipe.module.generation_config
    assert [(doc._.summary, doc._.summary_score) for doc in loaded.pipe(TEXTS)] == expected
    fresh = spacy.blank("en")
    fresh.add_pipe("led_summarizer", config={"max_summary_length": 12}).from_bytes(pipe.to_bytes())
    assert [(doc._.summary, doc._.summary_score) for doc in fresh.pipe(TEXTS)] == expected
