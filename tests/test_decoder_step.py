"""DecoderStep (generation's decoder step: static self-attention cache, fused QKV, shared cross-attention keys,
few-row products) against the decoder's general path: the same logits step after step, through beam reorders
and dropped inputs, on the general path's own full-sequence forward (no cache at all)."""
import pytest
import torch
from torch import nn

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration
from spacy_led.modeling import decoder_layer, decoder_step, fewrow
from spacy_led.modeling.decoder_step import FEW_ROWS, DecoderStep

from conftest import TINY, encoded_inputs, randomize_biases_and_norms, relative_error

TOLERANCE = 1e-5  # relative to the largest logit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig(**TINY)).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()
    randomize_biases_and_norms(model)
    return model


def _encoded(model, inputs: int):
    return encoded_inputs(model, inputs, length=21, pad_step=3)


def _full_logits(model, histories, encoded, mask, group):
    """Logits of the last position of every row's whole history, from one cache-free decoder forward."""
    rows = histories.shape[0]
    index = torch.arange(rows) // group
    with torch.no_grad():
        out = model.led.decoder(histories, encoded[index], encoder_attention_mask=mask[index])
        return model.logits(out.last_hidden_state[:, -1]).float()


def _assert_close(actual, expected):
    error = float((actual - expected).abs().max() / expected.abs().max())
    assert error < TOLERANCE, error


@pytest.mark.parametrize("attention", ["cpu", "ops", "torch", "gpu"])
@pytest.mark.parametrize("inputs, group", [(1, 1), (3, 1), (1, 4), (2, 3), (3, FEW_ROWS // 2)])
def test_steps_with_reorders_match_the_full_forward(model, inputs, group, attention, monkeypatch):
    """Rows of 1, of 2..8 (fewrow's products where it runs, the W @ x^T products where not), of 2..FEW_ROWS
    and beyond FEW_ROWS (48 rows); beams reorder within their group at every step, as beam search does, and the
    cache must follow its rows. "cpu" is the default (where this machine builds the kernels, each layer of up
    to 8 rows runs in one call of decoder_layer.c, and it must), "ops" the same with that off (the layer as
    torch operations, fewrow's cross-attention for groups of up to 8 beams, and it must run), "torch" with
    fewrow off too (scaled_dot_product_attention), "gpu" runs the step's attention through the products a GPU
    uses (the padding mask and the stacked beam queries must broadcast the same way there)."""
    if attention == "ops":
        monkeypatch.setattr(decoder_layer, "_off", _AlwaysOff())
    if attention == "gpu":
        def products(q, keys, values, mask, dropout):
            return decoder_step._explicit_attention(q, keys, values, mask)

        monkeypatch.setattr(decoder_step, "_attend", products)
        monkeypatch.setattr(fewrow, "library", lambda: None)
    if attention == "torch":
        monkeypatch.setattr(fewrow, "library", lambda: None)
    fewrow_attention = []
    if attention == "ops":
        attend = decoder_step._attend_fewrow
        monkeypatch.setattr(decoder_step, "_attend_fewrow",
                            lambda *args: fewrow_attention.append(attend(*args)) or fewrow_attention[-1])
    encoded, mask = _encoded(model, inputs)
    rows = inputs * group
    generator = torch.Generator().manual_seed(7)
    step = DecoderStep(model, encoded, mask, group=group, max_positions=6)
    built = fewrow.library() is not None and group <= fewrow.MAX_ROWS
    if attention in ("cpu", "ops") and built:
        assert step.layers[0].values_transposed
    layer_calls = decoder_layer.calls["layers"]
    histories = torch.full((rows, 1), 2)
    with torch.no_grad():
        for position in range(6):
            logits = step.logits(histories[:, -1])
            _assert_close(logits, _full_logits(model, histories, encoded, mask, group))
            if position == 5:
                break
            if group > 1:  # each row continues a random beam of its own input
                parents = torch.randint(0, group, (inputs, group), generator=generator)
                parents = (parents + torch.arange(inputs)[:, None] * group).flatten()
                step.reorder(parents)
                histories = histories[parents]
            tokens = torch.randint(3, TINY["vocab_size"], (rows, 1), generator=generator)
            histories = torch.cat([histories, tokens], dim=1)
    if attention == "ops" and built:
        assert len(fewrow_attention) == 6 * TINY["decoder_layers"] and all(a is not None for a in fewrow_attention)
    kernel_steps = decoder_layer.calls["layers"] - layer_calls
    if attention == "cpu" and built and rows <= decoder_layer.MAX_ROWS:
        assert kernel_steps == 6 * TINY["decoder_layers"]
    else:
        assert kernel_steps == 0


class _AlwaysOff:
    def __bool__(self):
        return True


def test_cross_attention_values_are_the_projection_transposed(model):
    """The step keeps each input's cross-attention values as (H, D, S) from the product W x^T + b: the same as
    v_proj's x W^T + b transposed, per input (padded inputs included)."""
    encoded, mask = _encoded(model, 3)
    with torch.no_grad():
        step = DecoderStep(model, encoded, mask, group=2, max_positions=2)
        for layer, layer_step in zip(model.led.decoder.layers, step.layers):
            heads, head_dim = layer_step.heads, layer_step.head_dim
            values = layer.encoder_attn.v_proj(encoded).view(3, encoded.shape[1], heads, head_dim)
            expected = values.permute(0, 2, 3, 1) if layer_step.values_transposed else values.transpose(1, 2)
            assert layer_step.cross_values.shape == expected.shape
            assert relative_error(layer_step.cross_values, expected) < 1e-6


def test_dropping_inputs_keeps_the_others_caches(model):
    encoded, mask = _encoded(model, 3)
    group = 2
    step = DecoderStep(model, encoded, mask, group=group, max_positions=4)
    histories = torch.tensor([[2, 5, 9], [2, 6, 9], [2, 7, 10], [2, 8, 11], [2, 4, 12], [2, 3, 13]])
    with torch.no_grad():
        step.logits(histories[:, 0])
        step.logits(histories[:, 1])
        keep = torch.tensor([0, 2])
        rows = step.keep_inputs(keep)
        assert rows.tolist() == [0, 1, 4, 5]
        logits = step.logits(histories[rows, 2])
    _assert_close(logits, _full_logits(model, histories[rows], encoded[keep], mask[keep], group))


class _LoggingLinear(nn.Linear):
    """A Linear subclass, as a quantized or wrapped layer would be: the step must call it, not read its weight."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


def test_layers_that_are_not_plain_linear_are_called(model):
    layer = model.led.decoder.layers[0]
    original = layer.self_attn.k_proj, layer.fc1
    try:
        for name, module in (("k_proj", layer.self_attn.k_proj), ("fc1", layer.fc1)):
            replacement = _LoggingLinear(module.in_features, module.out_features)
            replacement.load_state_dict(module.state_dict())
            setattr(layer.self_attn if name == "k_proj" else layer, name, replacement)
        encoded, mask = _encoded(model, 2)
        step = DecoderStep(model, encoded, mask, group=2, max_positions=2)
        histories = torch.tensor([[2], [2], [2], [2]])
        with torch.no_grad():
            step.logits(histories[:, 0])
            histories = torch.cat([histories, torch.tensor([[5], [6], [7], [8]])], dim=1)
            logits = step.logits(histories[:, 1])
        assert _LoggingLinear.calls == 4  # k_proj and fc1, two steps each
        _assert_close(logits, _full_logits(model, histories, encoded, mask, 2))
    finally:
        layer.self_attn.k_proj, layer.fc1 = original


def test_positions_beyond_the_cache_are_refused(model):
    encoded, mask = _encoded(model, 1)
    step = DecoderStep(model, encoded, mask, group=1, max_positions=1)
    with torch.no_grad():
        step.logits(torch.tensor([2]))
        with pytest.raises(ValueError, match="hold 1 positions"):
            step.logits(torch.tensor([5]))
    with pytest.raises(ValueError, match="max_decoder_position_embeddings"):
        DecoderStep(model, encoded, mask, group=1, max_positions=TINY["max_decoder_position_embeddings"] + 1)
