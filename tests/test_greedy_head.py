"""greedy_head: greedy search's next token through the LM head's int8 copy. The claim is exactness (the full
float32 product's token, always), so the tests attack it where it could break: the error bound itself, logits
that tie or nearly tie (far below the int8 error), banned and forced tokens, a weight changed in place after
its copy was built, and whole generations with the screen on and off."""
import pytest
import torch

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, fewrow, greedy_head

from conftest import TINY, relative_error, torch_threads

U = 2.0 ** -24


def _head(n=3000, k=96, seed=0, scale=0.02):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(n, k, generator=generator) * scale
    bias = torch.randn(n, generator=generator) * scale
    return weight, bias


def _hidden(rows, k, seed=1, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.layer_norm(torch.randn(rows, k, generator=generator), (k,)) * scale


def _full_token(hidden, weight, bias, ban=lambda scores: scores):
    with torch.no_grad():
        return ban(fewrow.linear(hidden, weight, bias)).argmax(dim=-1)


@pytest.mark.parametrize("k", [8, 77, 768])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_int8_products_match_their_definition(compiled_kernels, k, rows):
    generator = torch.Generator().manual_seed(k + rows)
    q = torch.randint(-127, 128, (1003, k), generator=generator, dtype=torch.int8)
    head = greedy_head.Int8Head.__new__(greedy_head.Int8Head)
    head.q, head.scales = q, torch.rand(1003, generator=generator) + 0.5
    hidden = torch.randn(rows, k, generator=generator)
    expected = (hidden.double() @ q.double().T) * head.scales.double()
    for threads in (1, 2):
        with torch_threads(threads):
            assert relative_error(greedy_head.int8_logits(head, hidden, compiled_kernels).double(), expected) < 1e-6


def test_the_copy_and_its_coefficients(compiled_kernels):
    weight, _ = _head(n=500, k=77)
    weight[3] = 0.0
    weight[4, 5] = 1.0  # one large entry: a coarse scale for that row
    head = greedy_head.Int8Head(weight, compiled_kernels)
    scales = weight.abs().amax(dim=1) / 127
    scales[3] = 1.0
    assert torch.allclose(head.scales, scales, rtol=1e-6, atol=0)
    assert int(head.q.abs().max()) <= 127 and bool((head.q[3] == 0).all())
    dequantized = head.q.double() * head.scales.double()[:, None]
    error = weight.double() - dequantized
    assert bool((error.abs() <= head.scales.double()[:, None] / 2 * (1 + 1e-6)).all())  # rounded to nearest
    k = weight.shape[1]
    gamma = k * U / (1 - k * U)
    expected = error.norm(dim=1) + 2 * gamma * (weight.double().norm(dim=1) + dequantized.norm(dim=1))
    assert bool((head.coefficients >= expected).all())
    assert relative_error(head.coefficients, expected) < 1e-8


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_the_bound_holds_and_leaves_few_candidates(compiled_kernels, scale):
    weight, bias = _head(n=20000, k=768)
    head = greedy_head.Int8Head(weight, compiled_kernels)
    hidden = _hidden(8, 768, scale=scale)
    with torch.no_grad():
        exact = fewrow.linear(hidden, weight, bias).double()
    approximate = (greedy_head.int8_logits(head, hidden, compiled_kernels) + bias).double()
    radius = (hidden.double().norm(dim=1)[:, None] * head.coefficients
              + 2.0 ** -20 * (approximate.abs() + bias.double().abs()))
    assert bool(((exact - approximate).abs() <= radius).all())
    greedy_head.calls.update(screened=0, candidates=0)
    with torch.no_grad():
        tokens = greedy_head.argmax(hidden, weight, bias, lambda scores: scores)
    assert torch.equal(tokens, _full_token(hidden, weight, bias))
    assert greedy_head.calls["screened"] == 1
    assert 8 <= greedy_head.calls["candidates"] <= 8 * 200  # at most 1% of the vocabulary per row


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
@pytest.mark.parametrize("with_bias", [True, False])
def test_near_ties_and_exact_ties_give_the_full_products_token(compiled_kernels, rows, with_bias):
    """Many rows of the weight differ from one another by ~1e-7 of their size: their logits differ far less
    than the int8 copy's error, so the screen keeps them all and the float32 logits must decide; two rows are
    exact copies (a tie: the lower token wins, as torch.argmax)."""
    weight, bias = _head(n=4000, k=96, seed=rows)
    hidden = _hidden(rows, 96, seed=rows + 10)
    generator = torch.Generator().manual_seed(rows + 20)
    for row in range(rows):
        direction = hidden[row] / hidden[row].norm()
        tied = torch.randint(0, 4000, (12,), generator=generator)
        base = direction * 0.5 + torch.randn(96, generator=generator) * 1e-3
        weight[tied] = base + torch.randn(12, 96, generator=generator) * 1e-7
        if row % 2 == 0:
            weight[tied[1]] = weight[tied[0]]  # an exact tie
    bias = bias if with_bias else None
    if with_bias:
        bias[weight.norm(dim=1) > 0.4] = 0.0  # the tied rows' biases must not decide for them
    greedy_head.calls.update(screened=0, candidates=0)
    for trial in range(3):
        nudged = hidden + trial * 1e-6
        with torch.no_grad():
            tokens = greedy_head.argmax(nudged, weight, bias, lambda scores: scores)
        assert torch.equal(tokens, _full_token(nudged, weight, bias))
    assert greedy_head.calls["candidates"] >= 3 * rows * 8  # the near-ties reached the float32 logits


def test_banned_and_forced_tokens(compiled_kernels):
    weight, bias = _head()
    hidden = _hidden(2, 96)
    best = _full_token(hidden, weight, bias)

    def ban_best(scores):
        scores[torch.arange(2), best] = -torch.inf
        return scores

    def force_17(scores):
        scores.fill_(-torch.inf)
        scores[:, 17] = 0
        return scores

    with torch.no_grad():
        for ban in (ban_best, force_17):
            tokens = greedy_head.argmax(hidden, weight, bias, ban)
            assert torch.equal(tokens, _full_token(hidden, weight, bias, ban))
        assert not bool((greedy_head.argmax(hidden, weight, bias, ban_best) == best).any())
        assert greedy_head.argmax(hidden, weight, bias, lambda scores: scores.fill_(-torch.inf)) is None


def test_a_weight_changed_in_place_is_requantized(compiled_kernels):
    weight, bias = _head()
    hidden = _hidden(1, 96)
    with torch.no_grad():
        first = greedy_head.argmax(hidden, weight, bias, lambda scores: scores)
        assert torch.equal(first, _full_token(hidden, weight, bias))
        other = (int(first) + 1) % weight.shape[0]
        weight[other] = hidden[0] / hidden[0].norm() * 2  # now the clear winner
        second = greedy_head.argmax(hidden, weight, bias, lambda scores: scores)
    assert int(second) == other == int(_full_token(hidden, weight, bias))


def test_what_it_declines(compiled_kernels):
    weight, bias = _head()
    keep = lambda scores: scores  # noqa: E731
    with torch.no_grad():
        assert greedy_head.argmax(_hidden(9, 96), weight, bias, keep) is None  # more rows than fewrow takes
        assert greedy_head.argmax(torch.full((1, 96), float("nan")), weight, bias, keep) is None
        assert greedy_head.argmax(_hidden(1, 96).double(), weight.double(), bias.double(), keep) is None
        with greedy_head.disabled():
            assert greedy_head.argmax(_hidden(1, 96), weight, bias, keep) is None
    assert greedy_head.argmax(_hidden(1, 96), weight, bias, keep) is None  # autograd on: the full product


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LEDConfig(**{**TINY, "vocab_size": 3000, "d_model": 64})
    model = LEDForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_()
    return model


SETTINGS = {
    "plain": {},
    "bans": {"min_length": 12, "no_repeat_ngram_size": 2, "bad_words_ids": [[5], [7, 8]], "forced_bos_token_id": 9,
             "suppress_tokens": [11], "encoder_no_repeat_ngram_size": 3},
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_greedy_generation_is_unchanged(compiled_kernels, model, name):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 3000, (3, 40), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    mask[2, 12:] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=16, num_beams=1, **SETTINGS[name])
    greedy_head.calls.update(screened=0, candidates=0)
    with torch.no_grad():
        screened = model.generate(ids, **kwargs)
        steps = greedy_head.calls["screened"]
        with greedy_head.disabled():
            full = model.generate(ids, **kwargs)
    assert steps >= 15  # every step went through the screen (rows that end early leave the batch)
    assert torch.equal(screened, full)


@pytest.mark.parametrize("kwargs", [{"repetition_penalty": 1.3}, {"do_sample": True, "top_k": 5},
                                    {"output_scores": True, "return_dict_in_generate": True}])
def test_settings_that_need_every_logit_keep_the_full_product(compiled_kernels, model, kwargs):
    ids = torch.randint(3, 3000, (1, 30), generator=torch.Generator().manual_seed(4))
    greedy_head.calls.update(screened=0, candidates=0)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=6, num_beams=1, **kwargs)
    assert greedy_head.calls["screened"] == 0


def test_a_weight_that_is_not_a_number_leaves_the_answer_to_the_full_product(compiled_kernels):
    weight, bias = _head()
    weight[5, 3] = float("nan")
    with torch.no_grad():
        assert greedy_head.argmax(_hidden(1, 96), weight, bias, lambda scores: scores) is None
