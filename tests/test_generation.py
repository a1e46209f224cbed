"""generate(): token-for-token parity with transformers' LEDForConditionalGeneration.generate for greedy and
beam search, on the reference setup of ``generation_reference`` (input-sensitive random checkpoints whose
sequences end at different lengths)."""
import json

import pytest
import torch

from spacy_led.modeling import LEDForConditionalGeneration
from spacy_led.modeling import generation as generation_module
from spacy_led.modeling.decoder_step import DecoderStep

from generation_reference import (
    CONFIG,
    DECODER_POSITIONS,
    EOS,
    PAD,
    START,
    assert_same,
    batch,
    big_batch,
    ended_early,
    generate_both,
    load_pair,
    reference_model,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_pair(tmp_path_factory.mktemp("led_generation"))


# ---- greedy ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, shortest, longest",
    [
        (dict(), 21, 21),  # nothing given: 20 new tokens after the start token
        (dict(max_length=30), 30, 30),  # max_length counts the start token
        (dict(max_new_tokens=30), 31, 31),
        (dict(max_new_tokens=12, max_length=40), 13, 13),  # max_new_tokens wins
        (dict(max_length=25, min_length=18, no_repeat_ngram_size=2), 19, 25),  # </s> from position 18 on
        (dict(max_length=12, forced_bos_token_id=0, forced_eos_token_id=EOS), 12, 12),
    ],
)
def test_greedy_matches_transformers(models, kwargs, shortest, longest):
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, **kwargs)
    assert_same(actual, expected)
    assert actual.shape[0] == 3 and shortest <= actual.shape[1] <= longest
    assert (actual[:, 0] == START).all()
    assert ended_early(actual)  # row 1 ends at once, so finished rows are padded in every case


def _end_positions(sequences):
    return [int((row[1:] == EOS).nonzero()[0]) + 1 for row in sequences]


def test_greedy_pads_finished_rows_and_stops_when_all_are_done(models):
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, max_new_tokens=100, no_repeat_ngram_size=3)
    assert_same(actual, expected)
    ends = _end_positions(actual)
    assert len(set(ends)) == 3  # rows ended at different steps ...
    assert actual.shape[1] == max(ends) + 1 < 101  # ... and the loop stopped when the last one did
    for row, end in zip(actual, ends, strict=True):
        assert (row[end + 1 :] == PAD).all()


def test_min_length_and_ngram_constraints_hold(models):
    ids, mask, glob = batch()
    _, ours = models
    out = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, max_length=30, min_length=20,
                        no_repeat_ngram_size=2)
    assert not (out[:, 1:19] == EOS).any()  # </s> banned while the sequence is shorter than 20
    for row in out.tolist():
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams))


# ---- beam search ----------------------------------------------------------------------------------------

BEAM_CASES = {
    "length_penalty_2_two_returned": dict(num_beams=4, length_penalty=2.0, num_return_sequences=2, max_length=30),
    "length_penalty_half_ngram_min_length_early_stop": dict(
        num_beams=4, length_penalty=0.5, no_repeat_ngram_size=3, min_length=8, early_stopping=True, max_length=30
    ),
    "heuristic_stop": dict(num_beams=4, early_stopping=False, max_new_tokens=40),
    "never_stop_early": dict(num_beams=3, early_stopping="never", length_penalty=1.5, max_length=25),
    "negative_penalty_all_returned": dict(num_beams=3, length_penalty=-1.0, num_return_sequences=3, max_length=20),
    "forced_tokens": dict(num_beams=4, forced_bos_token_id=0, forced_eos_token_id=EOS, max_length=15),
    "several_eos_pad_zero": dict(num_beams=3, eos_token_id=[EOS, 7], pad_token_id=0, max_length=20),
}


@pytest.mark.parametrize("case", sorted(BEAM_CASES))
def test_beam_search_matches_transformers(models, case):
    ids, mask, glob = batch()
    kwargs = BEAM_CASES[case]
    actual, expected = generate_both(models, ids, mask, glob, **kwargs)
    assert_same(actual, expected)
    assert actual.shape[0] == 3 * kwargs.get("num_return_sequences", 1)


STOPPING_EARLY = dict(num_beams=4, num_return_sequences=4, max_new_tokens=60, no_repeat_ngram_size=3)


def test_beam_search_finishes_hypotheses_early(models):
    """The parity cases above must not all run to max_length, or finishing would go untested."""
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob, **STOPPING_EARLY)
    assert_same(actual, expected)
    assert actual.shape == (12, max(_end_positions(actual)) + 1)
    assert actual.shape[1] < 61 and ended_early(actual)


def test_beam_search_return_order_is_best_first(models):
    """With num_return_sequences == num_beams the first row per input is the num_return_sequences=1 answer."""
    ids, mask, glob = batch()
    _, ours = models
    best = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, num_beams=3, max_length=20)
    every = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, num_beams=3, max_length=20,
                          num_return_sequences=3)
    assert every.shape[0] == 9
    for row in range(3):
        first = every[3 * row]
        assert torch.equal(first[: best.shape[1]], best[row])
        assert (first[best.shape[1] :] == PAD).all()


@pytest.mark.parametrize("compaction", ["default", "never", "always"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=40, no_repeat_ngram_size=3),
        dict(num_beams=3, max_new_tokens=30, no_repeat_ngram_size=3),
        dict(num_beams=3, max_new_tokens=30, early_stopping=True, num_return_sequences=2),
        dict(num_beams=2, max_new_tokens=30, early_stopping="never", length_penalty=0.5),
    ],
)
def test_many_inputs_finishing_at_different_steps(models, kwargs, compaction, monkeypatch):
    """Done inputs either stay in the batch (frozen) or leave it; both must give transformers' output."""
    if compaction != "default":
        always = compaction == "always"
        monkeypatch.setattr(generation_module, "_worth_compacting", lambda done, active: always and done > 0)
    ids, mask, glob = big_batch()
    actual, expected = generate_both(models, ids, mask, glob, **kwargs)
    assert_same(actual, expected)
    assert ended_early(actual)


def test_output_depends_on_the_input(models):
    _, ours = models
    ids, mask, glob = batch(seed=0)
    other_ids, other_mask, other_glob = batch(seed=1)
    for kwargs in (dict(max_length=20), dict(num_beams=3, max_length=20)):
        first = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, **kwargs)
        second = ours.generate(other_ids, attention_mask=other_mask, global_attention_mask=other_glob, **kwargs)
        assert not torch.equal(first, second)
        assert len({tuple(row) for row in first.tolist()}) == 3  # three inputs, three different outputs


def test_long_input(models):
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(4, CONFIG["vocab_size"], (2, 2000), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 1500:] = 0
    ids[1, 1500:] = PAD
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    glob[0, 1000] = 1
    for kwargs in (dict(max_new_tokens=6), dict(num_beams=2, max_new_tokens=4)):
        actual, expected = generate_both(models, ids, mask, glob, **kwargs)
        assert_same(actual, expected)


def test_longest_possible_output(models):
    """max_length may reach the decoder's positions + 1: the last token is never fed back."""
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids[:1], mask[:1], glob[:1], max_new_tokens=DECODER_POSITIONS,
                             min_length=DECODER_POSITIONS)
    assert_same(actual, expected)
    assert actual.shape == (1, DECODER_POSITIONS + 1)


def test_default_global_attention_is_the_first_token(models):
    reference, ours = models
    ids, mask, _ = batch()
    first = torch.zeros_like(ids)
    first[:, 0] = 1
    implicit = ours.generate(ids, attention_mask=mask, max_length=20)
    assert torch.equal(implicit, ours.generate(ids, attention_mask=mask, global_attention_mask=first, max_length=20))
    expected = reference.generate(ids, attention_mask=mask, global_attention_mask=first, max_length=20)
    assert torch.equal(implicit, expected)


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 0.5, 2.0])
def test_stopping_rule_matches_transformers_heuristic(early_stopping, length_penalty):
    """The 'can a running beam still win' rule against transformers' own function, near its boundary (where
    the normalising lengths max_length - 1, max_length and the current length give different answers)."""
    if not hasattr(transformers.GenerationMixin, "_check_early_stop_heuristic"):
        pytest.skip("this transformers version predates the beam search that has _check_early_stop_heuristic")
    generator = torch.Generator().manual_seed(0)
    inputs, beams, max_length, generated = 64, 4, 30, 9
    settings = generation_module.GenerationSettings(
        max_length=max_length, min_length=0, num_beams=beams, length_penalty=length_penalty,
        no_repeat_ngram_size=0, early_stopping=early_stopping, num_return_sequences=1,
        decoder_start_token_id=START, eos_token_ids=(EOS,), pad_token_id=PAD, forced_bos_token_id=None,
        forced_eos_token_ids=(),
    )
    best_running = -torch.rand(inputs, generator=generator) * 20 - 1
    # Worst finished score just above or just below the running score normalised by one of the lengths.
    lengths = torch.tensor([generated, max_length - 1, max_length] * inputs, dtype=torch.float)[:inputs]
    side = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0] * inputs)[:inputs]
    worst = best_running / lengths**length_penalty * (1 + side * 1e-4)
    others_better = torch.rand(inputs, beams, generator=generator) * torch.tensor([0.0] + [0.01] * (beams - 1))
    finished = worst[:, None] + others_better
    filled = torch.ones(inputs, beams, dtype=torch.bool)
    filled[::5, -1] = False  # an input with room can always improve
    finished = finished.masked_fill(~filled, generation_module.EMPTY_SCORE)
    expected = transformers.GenerationMixin._check_early_stop_heuristic(
        is_early_stop_heuristic_unsatisfied=torch.ones(inputs, 1, dtype=torch.bool),
        running_beam_scores=best_running[:, None].expand(-1, beams),
        beam_scores=finished,
        is_sent_finished=filled,
        cur_len=1 + generated,
        max_length=max_length,
        decoder_prompt_len=1,
        early_stopping=early_stopping,
        length_penalty=length_penalty,
    )[:, 0]
    actual = generation_module._can_improve(best_running, finished, generated, settings)
    assert torch.equal(actual, expected)
    assert 0 < int(expected.sum()) < inputs  # the cases straddle the boundary


# ---- how the work is done -------------------------------------------------------------------------------

def test_encoder_runs_once_and_beams_share_its_output(models, monkeypatch):
    """The decoder steps see one copy of the cross-attention keys per input (not per beam) with
    group=num_beams; finished inputs leave the batch."""
    _, ours = models
    encoder_calls, decoder_calls = [], []
    encoder_forward, step_logits = ours.led.encoder.forward, DecoderStep.logits

    def spy_encoder(*args, **kwargs):
        encoder_calls.append(1)
        return encoder_forward(*args, **kwargs)

    def spy_step(self, tokens):
        cross = self.layers[0].cross_keys.shape[0]
        decoder_calls.append((tokens.shape[0], self.layers[0].keys.shape[0], cross, self.group))
        return step_logits(self, tokens)

    monkeypatch.setattr(ours.led.encoder, "forward", spy_encoder)
    monkeypatch.setattr(DecoderStep, "logits", spy_step)
    ids, mask, glob = batch()
    out = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, **STOPPING_EARLY)
    assert encoder_calls == [1]
    assert all(rows == cached == 4 * cross and group == 4 for rows, cached, cross, group in decoder_calls)
    assert decoder_calls[0][2] == 3 and decoder_calls[-1][2] < 3  # done inputs were dropped
    assert len(decoder_calls) == out.shape[1] - 1 < 60  # stopped once every input was done


# ---- settings from the checkpoint -----------------------------------------------------------------------

CHECKPOINT_SETTINGS = dict(num_beams=3, max_length=18, min_length=6, length_penalty=2.0, no_repeat_ngram_size=2,
                           early_stopping=True, num_return_sequences=2)


@pytest.mark.parametrize("where", ["generation_config.json", "config.json"])
def test_checkpoint_generation_defaults(tmp_path, where):
    reference = reference_model()
    reference.save_pretrained(tmp_path)
    if where == "generation_config.json":
        settings = json.loads((tmp_path / where).read_text())
        settings.update(CHECKPOINT_SETTINGS)
    else:  # an old checkpoint: generation settings in config.json, no generation_config.json
        (tmp_path / "generation_config.json").unlink()
        settings = {**json.loads((tmp_path / where).read_text()), **CHECKPOINT_SETTINGS}
    (tmp_path / where).write_text(json.dumps(settings))
    models = (
        transformers.LEDForConditionalGeneration.from_pretrained(tmp_path).eval(),
        LEDForConditionalGeneration.from_pretrained(tmp_path).eval(),
    )
    ids, mask, glob = batch()
    actual, expected = generate_both(models, ids, mask, glob)
    assert_same(actual, expected)
    assert actual.shape[0] == 6 and actual.shape[1] <= 18  # two sequences per input, at most 18 tokens
    assert not (actual[:, 1:6] == EOS).any()  # min_length 6
    # Arguments override the checkpoint's settings.
    actual, expected = generate_both(models, ids, mask, glob, num_beams=1, num_return_sequences=1, max_new_tokens=5)
    assert_same(actual, expected)
    assert actual.shape == (3, 6)


def test_resolved_settings_count_the_start_token(models):
    _, ours = models
    settings = generation_module.resolve_settings(ours)
    assert (settings.max_length, settings.num_beams, settings.length_penalty) == (21, 1, 1.0)
    assert (settings.decoder_start_token_id, settings.eos_token_ids, settings.pad_token_id) == (START, (EOS,), PAD)
    assert generation_module.resolve_settings(ours, max_new_tokens=7).max_length == 8


# ---- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_beams=2, num_return_sequences=3), ValueError, "num_return_sequences \\(3\\) cannot exceed num_beams"),
        (dict(num_return_sequences=2), ValueError, "use beam search"),
        (dict(max_length=DECODER_POSITIONS + 2), ValueError, f"{DECODER_POSITIONS} positions"),
        (dict(max_new_tokens=DECODER_POSITIONS + 1), ValueError, f"at most {DECODER_POSITIONS} new tokens"),
        (dict(num_beams=0), ValueError, "num_beams must be at least 1"),
        (dict(max_length=1), ValueError, "max_length must be at least 2"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be at least 1"),
        (dict(early_stopping="sometimes"), ValueError, "early_stopping must be True, False or 'never'"),
        (dict(num_beams=2.5), TypeError, "num_beams must be an integer"),
        (dict(no_repeat_ngram_size=-1), ValueError, "no_repeat_ngram_size must be at least 0"),
        (dict(length_penalty=float("nan")), ValueError, "length_penalty must be a finite number"),
        (dict(forced_bos_token_id=500), ValueError, "outside the vocabulary"),
    ],
)
def test_invalid_settings_are_rejected(models, kwargs, error, message):
    _, ours = models
    ids, mask, glob = batch()
    with pytest.raises(error, match=message):
        ours.generate(ids, attention_mask=mask, global_attention_mask=glob, **kwargs)


def test_invalid_inputs_are_rejected(models):
    _, ours = models
    ids, mask, _ = batch()
    with pytest.raises(ValueError, match="shape \\(batch, length\\)"):
        ours.generate(ids[0])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        ours.generate(ids, attention_mask=mask[:, :10])
    with pytest.raises(TypeError, match="torch.Tensor"):
        ours.generate(ids.tolist())
