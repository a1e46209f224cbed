"""Numerical parity of spacy_led.modeling with transformers' LED, in float32.

Tolerance: max |ours - reference| <= 1e-5 x max |reference| (the summation order differs between the blocked
and the overlapping-chunk formulations, so bit equality is impossible).
"""
import pytest
import torch

from spacy_led.modeling import LEDForConditionalGeneration, LEDForQuestionAnswering, LEDModel, shift_tokens_right
from spacy_led.modeling.attention import EncoderMaskLayout, LEDEncoderSelfAttention
from spacy_led.modeling.model import LEDEncoderLayer

from conftest import TINY, make_batch, relative_error

TOL = 1e-5
GRAD_TOL = 1e-4  # gradients sum many more terms; still far below any real bug (which gives O(1) errors)


def _assert_states(ours, ref, mask, tol=TOL):
    """Compare hidden states on real (non-padding) positions; padding rows are arbitrary in the reference."""
    keep = mask.bool()
    assert relative_error(ours[keep], ref[keep]) <= tol


CASES = {
    # name: (length, real lengths per row, global positions per row). TINY's windows are 8 and 16 (one-sided 4
    # and 8): up to 12 / 24 tokens take one dense block, longer inputs blocks of w. With 4 heads and d_model 32,
    # 8 or more global tokens in a row take the direct global path, fewer the folded one.
    "padded_mixed_globals": (123, (123, 100, 50), ((0, 7, 60), (0,), ())),
    "short_dense_block": (10, (10, 7, 10), ((0,), (), (3, 9))),
    "dense_block_direct_globals": (10, (10, 10, 6), (tuple(range(8)), (0,), ())),
    "many_globals_direct_path": (70, (70, 70, 41), (tuple(range(0, 60, 5)), (1, 2), (0,))),
    "no_globals": (45, (45, 30, 45), ((), (), ())),
}


def _case_inputs(case):
    length, lengths, globals_ = CASES[case]
    return make_batch(length=length, pad_lengths=lengths, globals_per_row=globals_)


def _kernel_paths(model, case):
    """The encoder kernel's paths that a case takes, one (local part, global rows) pair per layer."""
    ids, mask, glob = _case_inputs(case)
    layout = EncoderMaskLayout.build(mask, glob)
    paths = set()
    for layer in model.led.encoder.layers:
        attention = layer.self_attn.longformer_self_attn
        local = "dense_block" if layout.block_size(attention.one_sided_attn_window_size) == ids.shape[1] else "blocked"
        rows = "none" if not layout.has_global else (
            "folded" if attention.folds_global_projections(layout.num_global) else "direct")
        paths.add((local, rows))
    return paths


def _field_names(reference_output):
    """transformers 5 renamed ``past_key_values`` to ``cache`` (the old name is its deprecated alias); spacy-led
    keeps the name of transformers 4 and the LED documentation."""
    return ["past_key_values" if name == "cache" else name for name in reference_output.keys()]


def _same_length(mine, theirs, expected_length):
    assert len(mine) == len(theirs) == expected_length
    return zip(mine, theirs)


@pytest.fixture(scope="module")
def cg_pair(hf_generation_checkpoint):
    reference, path = hf_generation_checkpoint
    return reference, LEDForConditionalGeneration.from_pretrained(path)


def test_cases_cover_every_kernel_path(cg_pair):
    """The cases below, each run with and without output_attentions, reach every path of the encoder kernel."""
    _, ours = cg_pair
    covered = set().union(*(_kernel_paths(ours, case) for case in CASES))
    assert covered >= {(local, rows) for local in ("dense_block", "blocked") for rows in ("folded", "direct")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conditional_generation_forward_matches(cg_pair, case):
    reference, ours = cg_pair
    ids, mask, glob = _case_inputs(case)
    decoder_ids = torch.randint(4, TINY["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(3))
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=decoder_ids,
                  output_hidden_states=True)
    with torch.no_grad():
        expected = reference(**kwargs)
        actual = ours(**kwargs)
    # transformers' fields in its order (ours adds the decoder's last_hidden_state at the end)
    assert actual.keys() == [*_field_names(expected), "last_hidden_state"]
    _assert_states(actual.encoder_last_hidden_state, expected.encoder_last_hidden_state, mask)
    layers = TINY["encoder_layers"] + 1  # the embeddings, then each layer
    for mine, theirs in _same_length(actual.encoder_hidden_states, expected.encoder_hidden_states, layers):
        _assert_states(mine, theirs, mask)
    assert relative_error(actual.logits, expected.logits) <= TOL
    layers = TINY["decoder_layers"] + 1
    for mine, theirs in _same_length(actual.decoder_hidden_states, expected.decoder_hidden_states, layers):
        assert relative_error(mine, theirs) <= TOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_probabilities_match(cg_pair, case):
    reference, ours = cg_pair
    ids, mask, glob = _case_inputs(case)
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, output_attentions=True)
    with torch.no_grad():
        expected = reference(**kwargs)
        actual = ours(**kwargs)
    layers = TINY["encoder_layers"]
    for mine, theirs in _same_length(actual.encoder_attentions, expected.encoder_attentions, layers):
        assert relative_error(mine, theirs) <= TOL  # (B, H, L, G + 2w + 1), relative layout
    if glob.any():
        pairs = _same_length(actual.encoder_global_attentions, expected.encoder_global_attentions, layers)
        for mine, theirs in pairs:
            assert relative_error(mine, theirs) <= TOL  # (B, H, L_padded, G)
    else:
        assert actual.encoder_global_attentions is None and expected.encoder_global_attentions is None
    layers = TINY["decoder_layers"]
    for name in ("decoder_attentions", "cross_attentions"):
        for mine, theirs in _same_length(getattr(actual, name), getattr(expected, name), layers):
            assert relative_error(mine, theirs) <= TOL
    # Outputs with the probabilities materialised equal the fused-kernel path.
    with torch.no_grad():
        fused = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    assert relative_error(actual.logits, fused.logits) <= TOL


def test_loss_and_gradients_match(cg_pair):
    reference, ours = cg_pair
    ids, mask, glob = make_batch(length=90, pad_lengths=(90, 61, 33), globals_per_row=((0, 44), (0,), ()))
    labels = torch.randint(4, TINY["vocab_size"], (3, 12), generator=torch.Generator().manual_seed(5))
    labels[1, 8:] = -100
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=labels)
    reference.zero_grad()
    ours.zero_grad()
    expected = reference(**kwargs)
    actual = ours(**kwargs)
    assert relative_error(actual.loss, expected.loss) <= TOL
    expected.loss.backward()
    actual.loss.backward()
    theirs = dict(reference.named_parameters())
    compared = 0
    for name, param in ours.named_parameters():
        assert param.grad is not None, name  # which parameters get one: tests/test_gradient_parity.py
        assert relative_error(param.grad, theirs[name].grad, floor=1e-2) <= GRAD_TOL, name
        compared += 1
    largest = max(float(p.grad.abs().max()) for p in ours.parameters() if p.grad is not None)
    assert largest > 1e-2  # the floor above is far below the real gradients
    assert compared >= 60  # every weight of the tiny model, global projections included
    reference.zero_grad()
    ours.zero_grad()


def test_long_input_of_thousands_of_tokens(transformers_led, tmp_path):
    """A few thousand tokens through several blocks of the window, with a window per layer; without autograd
    the encoder layers run in several chunks of tokens, the attention in several chunks of blocks."""
    torch.manual_seed(4)
    config = transformers_led.LEDConfig(**{**TINY, "attention_window": [64, 128]})
    reference = transformers_led.LEDModel(config).eval()
    reference.save_pretrained(tmp_path)
    ours = LEDModel.from_pretrained(tmp_path)
    ids, mask, glob = make_batch(batch=2, length=3001, pad_lengths=(3001, 2500), globals_per_row=((0, 1500), (0,)))
    assert ids.shape[1] > max(LEDEncoderLayer.chunk_tokens, LEDEncoderSelfAttention.chunk_tokens)  # 2+ chunks
    with torch.no_grad():
        expected = reference.encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        actual = ours.encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    _assert_states(actual.last_hidden_state, expected.last_hidden_state, mask)


def test_question_answering_matches(hf_qa_checkpoint):
    reference, path = hf_qa_checkpoint
    ours = LEDForQuestionAnswering.from_pretrained(path)
    ids, mask, glob = make_batch(length=60, pad_lengths=(60, 44, 30), globals_per_row=((0, 1, 2), (0,), ()))
    starts, ends = torch.tensor([5, 50, 3]), torch.tensor([9, 70, 3])  # 50/70 beyond row 1: clamped, ignored
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob,
                  start_positions=starts, end_positions=ends)
    expected = reference(**kwargs)
    actual = ours(**kwargs)
    assert relative_error(actual.start_logits, expected.start_logits) <= TOL
    assert relative_error(actual.end_logits, expected.end_logits) <= TOL
    assert relative_error(actual.loss, expected.loss) <= TOL
    expected.loss.backward()
    actual.loss.backward()
    assert relative_error(ours.qa_outputs.weight.grad, reference.qa_outputs.weight.grad) <= GRAD_TOL
    name = "led.encoder.layers.0.self_attn.longformer_self_attn.key_global.weight"
    assert relative_error(ours.get_parameter(name).grad, reference.get_parameter(name).grad) <= GRAD_TOL


def test_base_model_matches(hf_base_checkpoint):
    reference, path = hf_base_checkpoint
    ours = LEDModel.from_pretrained(path)
    ids, mask, glob = make_batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        actual = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    assert actual.keys() == _field_names(expected)
    # No decoder_input_ids: both shift input_ids right.
    assert relative_error(actual.last_hidden_state, expected.last_hidden_state) <= TOL
    _assert_states(actual.encoder_last_hidden_state, expected.encoder_last_hidden_state, mask)


def test_decoder_cache_equals_full_decoding(cg_pair):
    """Feeding the decoder one token at a time through the cache gives the same logits as one full pass."""
    _, ours = cg_pair
    ids, mask, glob = make_batch()
    decoder_ids = torch.randint(4, TINY["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=decoder_ids).logits
        encoder = ours.led.encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        cache, steps = None, []
        for t in range(decoder_ids.shape[1]):
            out = ours(encoder_outputs=encoder, attention_mask=mask, decoder_input_ids=decoder_ids[:, t : t + 1],
                       past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    assert cache.get_seq_length() == decoder_ids.shape[1]
    assert relative_error(torch.cat(steps, dim=1), full) <= TOL


def test_question_answering_past_the_decoder_positions(hf_qa_checkpoint):
    """Inputs longer than the decoder's 128 positions (where transformers fails) are decoded in segments:
    the first segment equals decoding it alone, and every position gets logits."""
    _, path = hf_qa_checkpoint
    ours = LEDForQuestionAnswering.from_pretrained(path)
    limit = TINY["max_decoder_position_embeddings"]
    ids, mask, glob = make_batch(batch=2, length=300, pad_lengths=(300, 200), globals_per_row=((0, 1), (0,)))
    with torch.no_grad():
        out = ours(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        encoder = ours.led.encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        shifted = shift_tokens_right(ids, 1, 2)
        first = ours(input_ids=ids, attention_mask=mask, encoder_outputs=encoder, decoder_input_ids=shifted[:, :limit])
        third = ours(input_ids=ids, attention_mask=mask, encoder_outputs=encoder,
                     decoder_input_ids=shifted[:, 2 * limit :])
    assert out.start_logits.shape == (2, 300) and torch.isfinite(out.start_logits).all()
    assert relative_error(out.start_logits[:, :limit], first.start_logits) <= TOL
    assert relative_error(out.end_logits[:, 2 * limit :], third.end_logits) <= TOL
