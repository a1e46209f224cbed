"""generate()'s other transformers arguments against transformers 5: score processors, sampling and beam sampling
(same ids after the same ``torch.manual_seed``), ``return_dict_in_generate`` outputs, and ``GenerationConfig``.

Every processor case also checks that the setting changed the output, so a processor that is never applied
cannot pass. Scores are compared step by step: the same banned (-inf) entries, the rest within 1e-5 of the
largest magnitude.
"""
import json
import logging

import pytest
import torch

from spacy_led.modeling import GenerationConfig, LEDForConditionalGeneration
from spacy_led.modeling import generation as generation_module

from conftest import relative_error
from generation_reference import EOS, PAD, assert_same, batch, big_batch, ended_early, generate_both, load_pair

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_pair(tmp_path_factory.mktemp("led_generation_arguments"))


def _assert_steps_close(actual, expected):
    assert actual is not None and expected is not None
    assert len(actual) == len(expected) > 0
    for ours, theirs in zip(actual, expected, strict=True):
        finite = torch.isfinite(theirs)
        assert torch.equal(torch.isfinite(ours), finite)
        assert torch.equal(ours[~finite], theirs[~finite])
        assert int(finite.sum()) > 0
        assert relative_error(ours[finite], theirs[finite]) <= TOLERANCE


def _assert_outputs_match(actual, expected, beam: bool):
    assert_same(actual.sequences, expected.sequences)
    _assert_steps_close(actual.scores, expected.scores)
    if expected.logits is not None:
        _assert_steps_close(actual.logits, expected.logits)
    if beam:
        assert relative_error(actual.sequences_scores, expected.sequences_scores) <= TOLERANCE
        assert torch.equal(actual.beam_indices.long(), expected.beam_indices.long())


def _plain(models, ids, mask, glob, **kwargs):
    return models[1].generate(ids, attention_mask=mask, global_attention_mask=glob, **kwargs)


# ---- score processors, greedy and beam search -----------------------------------------------------------

PROCESSOR_CASES = {
    "repetition_penalty": dict(repetition_penalty=1.6),
    "encoder_repetition_penalty_ngrams_min_length": dict(encoder_repetition_penalty=2.5, no_repeat_ngram_size=2,
                                                         min_length=12),
    "encoder_no_repeat_unigrams_min_new_tokens": dict(encoder_no_repeat_ngram_size=1, min_new_tokens=6),
    "renormalized_repetition_penalty": dict(repetition_penalty=0.7, renormalize_logits=True),
    "forced_bos_and_begin_suppress": dict(forced_bos_token_id=0, begin_suppress_tokens=[5, 17, 40]),
}
BEAM_CASES = {
    "repetition_penalty_two_returned": dict(num_beams=3, repetition_penalty=1.4, num_return_sequences=2),
    "suppressed_min_length_early_stop": dict(num_beams=4, suppress_tokens=[63, 49], min_length=8,
                                             length_penalty=0.7, early_stopping=True),
    "encoder_penalty_ngrams_renormalized": dict(num_beams=3, encoder_repetition_penalty=1.8, no_repeat_ngram_size=2,
                                                renormalize_logits=True),
}
RETURN_DICT = dict(return_dict_in_generate=True, output_scores=True, max_new_tokens=30)


@pytest.mark.parametrize("case", sorted(PROCESSOR_CASES))
def test_greedy_processors_match_transformers(models, case):
    ids, mask, glob = batch()
    kwargs = PROCESSOR_CASES[case]
    actual, expected = generate_both(models, ids, mask, glob, **kwargs, **RETURN_DICT, output_logits=True)
    _assert_outputs_match(actual, expected, beam=False)
    assert not torch.equal(actual.sequences, _plain(models, ids, mask, glob, max_new_tokens=30))


@pytest.mark.parametrize("case", sorted(BEAM_CASES))
def test_beam_processors_scores_and_beam_indices_match_transformers(models, case):
    ids, mask, glob = batch()
    kwargs = BEAM_CASES[case]
    actual, expected = generate_both(models, ids, mask, glob, **kwargs, **RETURN_DICT)
    _assert_outputs_match(actual, expected, beam=True)
    assert actual.sequences.shape[0] == 3 * kwargs.get("num_return_sequences", 1)
    plain = dict(kwargs, repetition_penalty=None, encoder_repetition_penalty=None, suppress_tokens=None)
    assert not torch.equal(actual.sequences, _plain(models, ids, mask, glob, max_new_tokens=30, **plain))


def _common_token(sequences) -> int:
    words = [token for row in sequences.tolist() for token in row[1:] if token not in (EOS, PAD)]
    return max(set(words), key=words.count)


def test_token_bans_drawn_from_the_output_match_transformers(models):
    """bad_words_ids and suppress_tokens chosen from what the model says without them, so each ban bites."""
    ids, mask, glob = batch()
    for extra in (dict(), dict(num_beams=3)):
        plain = _plain(models, ids, mask, glob, max_new_tokens=30, **extra)
        first, pair = int(plain[0, 1]), plain[2, 1:3].tolist()
        assert not {first, *pair} & {EOS, PAD}
        bad_words = [[first], pair, [EOS]]
        banned, expected = generate_both(models, ids, mask, glob, bad_words_ids=bad_words, **extra, **RETURN_DICT)
        _assert_outputs_match(banned, expected, beam=bool(extra))
        rows = banned.sequences.tolist()
        assert all(first not in row[1:] for row in rows)
        assert all(row[i : i + 2] != pair for row in rows for i in range(len(row) - 1))
        assert any(EOS in row[1:] for row in rows)  # [</s>] alone is never banned
        assert not torch.equal(banned.sequences, plain)

        suppressed = _common_token(banned.sequences)
        actual, expected = generate_both(models, ids, mask, glob, bad_words_ids=bad_words, suppress_tokens=[suppressed],
                                         **extra, **RETURN_DICT)
        _assert_outputs_match(actual, expected, beam=bool(extra))
        assert all(suppressed not in row[1:] for row in actual.sequences.tolist())
        assert not torch.equal(actual.sequences, banned.sequences)


def _ngrams(tokens, n):
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@pytest.mark.parametrize("n, extra", [(2, dict()), (2, dict(num_beams=4, min_length=8, early_stopping=True)),
                                      (1, dict(num_beams=3, num_return_sequences=1))])
def test_input_ngrams_are_never_completed(models, n, extra):
    """encoder_no_repeat_ngram_size: the banned entries of every step's scores equal transformers' (and there
    are some), and no n-gram of a row's input, padding included, is completed."""
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, encoder_no_repeat_ngram_size=n, **extra, **RETURN_DICT)
    _assert_outputs_match(actual, expected, beam=bool(extra))
    plain = generate_both(models, ids, mask, glob, **extra, **RETURN_DICT)[0]
    banned = sum(int(torch.isinf(step).sum()) for step in actual.scores)
    assert banned > sum(int(torch.isinf(step).sum()) for step in plain.scores)
    rows = actual.sequences.tolist()
    for row, tokens in zip(rows, ids.tolist(), strict=True):
        end = row.index(EOS, 1) + 1 if EOS in row[1:] else len(row)
        completed = {tuple(row[i - n + 1 : i + 1]) for i in range(max(1, n - 1), end)}  # ending at a generated token
        assert not completed & _ngrams(tokens, n)


def test_many_inputs_with_processors_and_padding(models):
    ids, mask, glob = big_batch()
    for kwargs in (dict(repetition_penalty=1.5, encoder_no_repeat_ngram_size=2, max_new_tokens=30),
                   dict(num_beams=3, encoder_repetition_penalty=1.5, no_repeat_ngram_size=3, max_new_tokens=30)):
        actual, expected = generate_both(models, ids, mask, glob, **kwargs)
        assert_same(actual, expected)
        assert ended_early(actual)


# ---- sampling ---------------------------------------------------------------------------------------------

SAMPLING_CASES = {
    "default_top_k": dict(),
    "temperature_top_k": dict(temperature=0.6, top_k=8),
    "top_p_three_each_ngrams_min_length": dict(top_p=0.85, top_k=0, num_return_sequences=3, no_repeat_ngram_size=3,
                                               min_length=10),
    "hot_top_p_repetition_encoder_ngrams": dict(temperature=1.5, top_p=0.9, repetition_penalty=1.3,
                                                encoder_no_repeat_ngram_size=2),
    "beam_sampling_top_k_two_returned": dict(num_beams=3, top_k=20, num_return_sequences=2),
    "beam_sampling_top_p_early_stop": dict(num_beams=4, temperature=0.8, top_p=0.9, early_stopping=True,
                                           length_penalty=1.5, no_repeat_ngram_size=2),
}


@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_sampling_matches_transformers_for_the_same_seed(models, case):
    ids, mask, glob = batch()
    kwargs = dict(SAMPLING_CASES[case], do_sample=True, max_new_tokens=30)
    outputs = []
    for seed in (0, 1, 2):
        actual, expected = generate_both(models, ids, mask, glob, seed=seed, **kwargs)
        assert_same(actual, expected)
        outputs.append(actual)
    assert len({tuple(out.flatten().tolist()) for out in outputs}) == 3  # the seed matters: it is sampling


@pytest.mark.parametrize("compaction", ["never", "always"])
@pytest.mark.parametrize("kwargs", [dict(top_k=10), dict(num_beams=2, top_p=0.9, num_return_sequences=2)])
def test_sampling_draws_transformers_random_numbers_whoever_leaves_the_batch(models, kwargs, compaction,
                                                                              monkeypatch):
    """Finished inputs leaving the batch must not change which random numbers the others get."""
    always = compaction == "always"
    monkeypatch.setattr(generation_module, "_worth_compacting", lambda done, active: always and done > 0)
    ids, mask, glob = big_batch()
    actual, expected = generate_both(models, ids, mask, glob, seed=11, do_sample=True, max_new_tokens=30, **kwargs)
    assert_same(actual, expected)
    assert ended_early(actual)


def test_beam_sampling_outputs_match_transformers(models):
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, seed=4, do_sample=True, num_beams=3, top_k=30,
                                     num_return_sequences=3, **RETURN_DICT)
    _assert_outputs_match(actual, expected, beam=True)


def test_mean_token_log_probability_of_greedy_and_sampled_sequences(models):
    """sequences_scores of greedy/sampling = transformers' normalised transition scores averaged over each
    sequence's tokens up to its </s>."""
    reference, _ = models
    ids, mask, glob = batch()
    for kwargs in (dict(repetition_penalty=1.2), dict(do_sample=True, top_k=20, num_return_sequences=2)):
        actual, expected = generate_both(models, ids, mask, glob, seed=3, **kwargs, **RETURN_DICT)
        assert_same(actual.sequences, expected.sequences)
        transitions = reference.compute_transition_scores(expected.sequences, expected.scores, normalize_logits=True)
        generated = expected.sequences[:, 1:]
        ended_before = torch.cumsum((generated == EOS).long(), dim=1) - (generated == EOS).long() > 0
        counts = (~ended_before).sum(dim=1)
        means = transitions.masked_fill(ended_before, 0).sum(dim=1) / counts
        assert counts.min() < counts.max()  # sequences of different lengths
        assert torch.allclose(actual.sequences_scores, means, rtol=TOLERANCE, atol=TOLERANCE)
        assert (actual.sequences_scores < 0).all()


def test_sampling_without_any_allowed_token_is_a_clear_error(models):
    ids, mask, glob = batch()
    with pytest.raises(ValueError, match="every token was banned"):
        _plain(models, ids, mask, glob, do_sample=True, suppress_tokens=list(range(99)), max_new_tokens=3)


# ---- GenerationConfig ---------------------------------------------------------------------------------------

def test_generation_config_object_or_dict_and_arguments_override_it(models):
    ids, mask, glob = batch()
    settings = dict(num_beams=3, max_new_tokens=12, no_repeat_ngram_size=2, repetition_penalty=1.3)
    actual, expected = generate_both(models, ids, mask, glob, generation_config=transformers.GenerationConfig(**settings))
    assert torch.equal(_plain(models, ids, mask, glob, generation_config=GenerationConfig(**settings)), expected)
    assert_same(_plain(models, ids, mask, glob, generation_config=settings), expected)
    # Arguments win over generation_config (here: greedy instead of beams).
    actual = _plain(models, ids, mask, glob, generation_config=settings, num_beams=1)
    assert_same(actual, _plain(models, ids, mask, glob, **dict(settings, num_beams=1)))
    assert not torch.equal(actual, expected)


def test_checkpoint_generation_config_is_read_applied_and_written_back(tmp_path):
    reference = load_pair(tmp_path / "base")[0]
    path = tmp_path / "sampling"
    reference.save_pretrained(path)
    settings = json.loads((path / "generation_config.json").read_text())
    settings.update(do_sample=True, top_k=5, temperature=0.5, repetition_penalty=1.2, num_return_sequences=2,
                    max_new_tokens=15)
    (path / "generation_config.json").write_text(json.dumps(settings))
    models = (transformers.LEDForConditionalGeneration.from_pretrained(path).eval(),
              LEDForConditionalGeneration.from_pretrained(path).eval())
    ours = models[1].generation_config
    assert (ours.do_sample, ours.top_k, ours.temperature, ours.num_return_sequences) == (True, 5, 0.5, 2)
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, seed=5)
    assert_same(actual, expected)
    assert actual.shape[0] == 6
    models[1].save_pretrained(tmp_path / "saved")
    written = transformers.GenerationConfig.from_pretrained(tmp_path / "saved")
    assert (written.do_sample, written.top_k, written.temperature, written.max_new_tokens) == (True, 5, 0.5, 15)


def test_unsupported_setting_in_a_checkpoint_warns_and_is_kept(tmp_path, caplog):
    reference = load_pair(tmp_path / "base")[0]
    path = tmp_path / "typical"
    reference.save_pretrained(path)
    settings = json.loads((path / "generation_config.json").read_text())
    (path / "generation_config.json").write_text(json.dumps(dict(settings, typical_p=0.5, use_cache=True)))
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        model = LEDForConditionalGeneration.from_pretrained(path)
    assert "typical_p=0.5" in caplog.text and "not applied" in caplog.text and "use_cache" not in caplog.text
    model.save_pretrained(tmp_path / "saved")
    written = json.loads((tmp_path / "saved" / "generation_config.json").read_text())
    assert written["typical_p"] == 0.5 and written["use_cache"] is True


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(typical_p=0.5), ValueError, "does not support 'typical_p'.*top_p"),
        (dict(num_beam_groups=2, diversity_penalty=0.5), ValueError, "does not support 'num_beam_groups'"),
        (dict(output_attentions=True), ValueError, "does not support 'output_attentions'"),
        (dict(num_beam=3), TypeError, "unexpected keyword arguments \\['num_beam'\\].*num_beams"),
        (dict(do_sample=True, temperature=0.0), ValueError, "temperature must be a positive finite number"),
        (dict(do_sample=True, top_p=1.5), ValueError, "top_p must be between 0 and 1"),
        (dict(top_k=-1), ValueError, "top_k must be at least 0"),
        (dict(repetition_penalty=0), ValueError, "repetition_penalty must be a positive"),
        (dict(bad_words_ids=[[]]), ValueError, "non-empty token-id lists"),
        (dict(bad_words_ids=[[3, 500]]), ValueError, "outside the vocabulary"),
        (dict(do_sample="yes"), TypeError, "do_sample must be True or False"),
        (dict(suppress_tokens=[EOS], forced_eos_token_id=EOS), ValueError, "also in suppress_tokens"),
        (dict(generation_config=[("num_beams", 2)]), TypeError, "generation_config must be a GenerationConfig"),
    ],
)
def test_invalid_or_unsupported_arguments_are_rejected(models, kwargs, error, message):
    ids, mask, glob = batch()
    with pytest.raises(error, match=message):
        _plain(models, ids, mask, glob, **kwargs)


def test_output_neutral_and_no_op_settings_are_accepted(models):
    ids, mask, glob = batch()
    plain = _plain(models, ids, mask, glob, max_new_tokens=10)
    same = _plain(models, ids, mask, glob, max_new_tokens=10, use_cache=True, typical_p=1.0, num_beam_groups=1)
    assert torch.equal(plain, same)


def test_generation_config_round_trips_through_a_dict():
    config = GenerationConfig.from_dict({"num_beams": 4, "eos_token_id": [2, 7], "transformers_version": "5.0"})
    assert GenerationConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == {"num_beams": 4, "eos_token_id": [2, 7], "transformers_version": "5.0"}  # unset: left out
