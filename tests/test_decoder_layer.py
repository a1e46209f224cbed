"""decoder_layer.c (a decoder layer of generation's step in one call) against the same layer as torch
operations (``decoder_layer.disabled()``): hidden states and self-attention caches step after step, with
beams, padding, reorders and either activation; the layers it does not compute are left to the operations."""
import pytest
import torch
from torch import nn

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, decoder_layer
from spacy_led.modeling.decoder_step import DecoderStep

from conftest import TINY, encoded_inputs, randomize_biases_and_norms, relative_error, torch_threads

pytestmark = pytest.mark.usefixtures("compiled_kernels")  # skips where they cannot run, fails where they should

TOLERANCE = 1e-5  # relative to the largest value (float32 parity)


def _model(**overrides):
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig(**{**TINY, **overrides})).eval()
    randomize_biases_and_norms(model)
    return model


def _encoded(model, inputs: int):
    return encoded_inputs(model, inputs, length=23, pad_step=4)


def _run(model, inputs, group, steps, kernel_on):
    """Each step's last hidden states and, at the end, the first layer's self-attention cache."""
    encoded, mask = _encoded(model, inputs)
    step = DecoderStep(model, encoded, mask, group=group, max_positions=steps)
    generator = torch.Generator().manual_seed(11)
    tokens = torch.full((inputs * group,), 2)
    states = []
    before = decoder_layer.calls["layers"]
    with torch.no_grad():
        for position in range(steps):
            if kernel_on:
                states.append(step._hidden(tokens))
            else:
                with decoder_layer.disabled():
                    states.append(step._hidden(tokens))
            if group > 1:  # each row continues a random beam of its own input
                parents = torch.randint(0, group, (inputs, group), generator=generator)
                step.reorder((parents + torch.arange(inputs)[:, None] * group).flatten())
            tokens = torch.randint(3, model.config.vocab_size, (inputs * group,), generator=generator)
    layer = step.layers[0]
    return states, (layer.keys[:, :, :steps], layer.values[:, :, :steps]), decoder_layer.calls["layers"] - before


@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize("inputs, group", [(1, 1), (3, 1), (2, 3), (1, 8)])
def test_kernel_matches_the_layer_as_operations(inputs, group, activation):
    """1-8 rows, several inputs with different padding, beams reordered every step; ffn 37 and d 32 are not
    multiples of the kernels' 8 lanes (their tails)."""
    model = _model(activation_function=activation)
    steps = 7
    fast, fast_cache, fast_calls = _run(model, inputs, group, steps, kernel_on=True)
    slow, slow_cache, slow_calls = _run(model, inputs, group, steps, kernel_on=False)
    assert (fast_calls, slow_calls) == (steps * TINY["decoder_layers"], 0)
    assert len(fast) == len(slow) == steps
    for actual, expected in zip(fast, slow):
        assert relative_error(actual, expected) < TOLERANCE
    for actual, expected in zip(fast_cache, slow_cache):
        assert relative_error(actual, expected) < TOLERANCE


def test_kernel_and_operations_share_the_cache():
    """Steps alternate between the kernel and the operations: each reads what the other wrote."""
    model = _model()
    encoded, mask = _encoded(model, 2)
    mixed = DecoderStep(model, encoded, mask, group=2, max_positions=6)
    plain = DecoderStep(model, encoded, mask, group=2, max_positions=6)
    tokens = torch.tensor([2, 2, 2, 2])
    with torch.no_grad():
        for position in range(6):
            with decoder_layer.disabled():
                expected = plain.logits(tokens)
                if position % 2:
                    actual = mixed.logits(tokens)
            if position % 2 == 0:
                actual = mixed.logits(tokens)
            assert relative_error(actual, expected) < TOLERANCE
            tokens = expected.argmax(-1)


class _Norm(nn.LayerNorm):
    """A LayerNorm subclass (as a replaced or wrapped norm would be): the kernel must not read its weights."""


@pytest.mark.parametrize("case", ["silu", "head_dim", "norm", "no_norm_bias"])
def test_layers_the_kernel_does_not_compute_run_as_operations(case):
    model = _model(**({"activation_function": "silu"} if case == "silu" else
                      {"d_model": 36} if case == "head_dim" else {}))  # head dim 9: not a multiple of 8
    layer = model.led.decoder.layers[1]
    if case == "norm":
        norm = _Norm(model.config.d_model)
        norm.load_state_dict(layer.final_layer_norm.state_dict())
        layer.final_layer_norm = norm
    if case == "no_norm_bias":
        layer.encoder_attn_layer_norm = nn.LayerNorm(model.config.d_model, bias=False)
    encoded, mask = _encoded(model, 1)
    step = DecoderStep(model, encoded, mask, group=1, max_positions=2)
    built = [layer_step.kernel is not None for layer_step in step.layers]
    assert built == ([False, False] if case in ("silu", "head_dim") else [True, False])


def test_training_and_autograd_run_as_operations():
    model = _model()
    encoded, mask = _encoded(model, 1)
    step = DecoderStep(model, encoded.detach(), mask, group=1, max_positions=3)
    before = decoder_layer.calls["layers"]
    with torch.enable_grad():
        step._hidden(torch.tensor([2]))
    model.train()
    try:
        with torch.no_grad():
            step._hidden(torch.tensor([5]))
    finally:
        model.eval()
    assert decoder_layer.calls["layers"] == before
    with torch.no_grad():
        step._hidden(torch.tensor([6]))
    assert decoder_layer.calls["layers"] == before + TINY["decoder_layers"]


def test_same_bits_with_one_thread_or_several():
    """Each output is computed whole by one thread (products split over output features, attention over
    (row, head), norms over rows): the thread count must not change a bit of the steps, and a missing barrier
    between stages would (a thread reading a stage its partner has not finished). The encoder output and the
    cross-attention keys/values (torch's and MKL's work) are made once, with the same threads."""
    model = _model()
    encoded, mask = _encoded(model, 2)
    runs = []
    for count in (1, 2, 3):
        with torch_threads(2):
            step = DecoderStep(model, encoded, mask, group=3, max_positions=5)
        tokens = torch.full((6,), 2)
        states = []
        with torch_threads(count), torch.no_grad():
            for position in range(5):
                states.append(step._hidden(tokens))
                step.reorder(torch.tensor([1, 0, 0, 5, 3, 4]))
                tokens = torch.arange(6) + 3 + position
        runs.append((states, step.layers[0].keys[:, :, :5].clone()))
    (first, first_cache), *others = runs
    for states, cache in others:
        assert len(states) == len(first) == 5
        assert all(torch.equal(a, b) for a, b in zip(states, first))
        assert torch.equal(cache, first_cache)
