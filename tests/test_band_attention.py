"""band_attention (the encoder's compiled sliding-window attention in float32 inference on the CPU).

It must give what the plain dense reference gives (a seeded random sweep over lengths, windows, head sizes,
padding and global layouts, through the whole attention module), what the SDPA path gives on a long input
with led-base's window, the same bits whatever the thread count or the other documents of the batch, and
None wherever it must not run (the SDPA path then runs, and is what autograd differentiates)."""
import pytest
import torch

from spacy_led.modeling import band_attention, kernels
from spacy_led.modeling.attention import EncoderMaskLayout, LEDEncoderSelfAttention

from conftest import relative_error, torch_threads
from test_attention_kernel import random_case, reference

TOL = 1e-5  # of the largest value, as tests/test_attention_kernel.py
N_CASES = 60


@pytest.fixture
def calls(monkeypatch):
    """The outputs of every band_attention call (None where it declined)."""
    made = []
    original = band_attention.local_attention
    monkeypatch.setattr(band_attention, "local_attention", lambda *args: made.append(original(*args)) or made[-1])
    return made


def test_the_module_gives_the_dense_reference_through_the_kernel(compiled_kernels, calls):
    generator = torch.Generator().manual_seed(11)
    for case in range(N_CASES):
        # windows up to 40, head sizes 8-40, lengths around the tile (6), panel (16) and block (48) sizes
        module, hidden, attention_mask, global_mask = random_case(
            generator, max_one_sided=40, head_dims=(1, 5), head_dim_step=8, max_length=lambda w: 3 * w + 100)
        with torch.no_grad():
            expected, _ = reference(module, hidden, attention_mask, global_mask)
            layout = EncoderMaskLayout.build(attention_mask, global_mask)
            out, _ = module(hidden, layout)
        batch, length, _ = hidden.shape
        expected = expected.transpose(1, 2).reshape(batch, length, -1)
        assert relative_error(out, expected) < TOL, (case, relative_error(out, expected))
    assert len(calls) == N_CASES and all(c is not None for c in calls)  # the kernel, not the SDPA path


def _qkv(batch, length, heads, head_dim, seed):
    generator = torch.Generator().manual_seed(seed)
    return [2 * torch.randn(batch, length, heads, head_dim, generator=generator) for _ in range(3)]


def test_led_base_window_matches_the_sdpa_path(compiled_kernels):
    """A long input with led-base's window (w = 512) and head size (64): many blocks, padding, global tokens."""
    q, k, v = _qkv(2, 2100, 2, 64, seed=1)
    attention_mask = torch.ones(2, 2100, dtype=torch.long)
    attention_mask[1, 1500:] = 0
    global_mask = torch.zeros(2, 2100, dtype=torch.long)
    global_mask[0, [0, 700, 2099]] = 1
    global_mask[1, 0] = 1
    layout = EncoderMaskLayout.build(attention_mask, global_mask)
    module = LEDEncoderSelfAttention(128, 2, 1024, dropout=0.0).eval()
    with torch.no_grad():
        out = band_attention.local_attention(q, k, v, layout, 512)
        with kernels.disabled():
            expected = module._local_attention(q, k, v, layout, 0.0)
    rows = ~(layout.is_pad | layout.is_global)  # what the caller keeps of the local part
    assert relative_error(out[rows], expected[rows]) < TOL


def test_same_bits_whatever_the_threads_and_the_batch(compiled_kernels):
    """A document's local attention does not depend on the thread count, or on a longer document padding it
    in a batch (the CLI resumes a killed run with documents in other batches and must write the same bytes)."""
    q, k, v = _qkv(1, 700, 2, 16, seed=2)
    alone = EncoderMaskLayout.build(torch.ones(1, 700, dtype=torch.long), torch.eye(1, 700, dtype=torch.long))
    with torch.no_grad():
        with torch_threads(2):
            reference_out = band_attention.local_attention(q, k, v, alone, 40)
        with torch_threads(1):
            assert torch.equal(band_attention.local_attention(q, k, v, alone, 40), reference_out)
        other_q, other_k, other_v = _qkv(1, 1000, 2, 16, seed=3)
        padded = [torch.cat([torch.cat([t, torch.randn(1, 300, 2, 16)], dim=1), o]) for t, o in
                  ((q, other_q), (k, other_k), (v, other_v))]
        attention_mask = torch.ones(2, 1000, dtype=torch.long)
        attention_mask[0, 700:] = 0
        global_mask = torch.zeros(2, 1000, dtype=torch.long)
        global_mask[0, 0] = 1
        global_mask[1, [0, 5, 999]] = 1  # more global slots than the first document has
        batch = EncoderMaskLayout.build(attention_mask, global_mask)
        batched = band_attention.local_attention(*padded, batch, 40)
    assert torch.equal(batched[0, :700], reference_out[0])


def test_declines_where_it_must_not_run(compiled_kernels):
    q, k, v = _qkv(1, 50, 2, 8, seed=4)
    layout = EncoderMaskLayout.build(torch.ones(1, 50, dtype=torch.long), None)
    assert band_attention.local_attention(q, k, v, layout, 4) is None  # autograd on: SDPA records the graph
    with torch.no_grad():
        assert band_attention.local_attention(q, k, v, layout, 4) is not None
        assert band_attention.local_attention(q, k, v, layout, 4, dropout=0.1) is None
        assert band_attention.local_attention(q.double(), k.double(), v.double(), layout, 4) is None
        q4, k4, v4 = _qkv(1, 50, 4, 4, seed=5)  # head size 4: not a multiple of 8
        assert band_attention.local_attention(q4, k4, v4, layout, 4) is None
        assert band_attention.local_attention(q.transpose(1, 2).contiguous().transpose(1, 2), k, v, layout, 4) is None
        with kernels.disabled():
            assert band_attention.local_attention(q, k, v, layout, 4) is None


def test_the_encoder_is_the_same_with_and_without_the_kernel(compiled_kernels, calls):
    """The tiny model's whole encoder (head size 8), kernel against SDPA path."""
    from conftest import TINY
    from spacy_led.modeling.config import LEDConfig
    from spacy_led.modeling.model import LEDModel

    torch.manual_seed(0)
    model = LEDModel(LEDConfig(**TINY)).eval()
    ids = torch.randint(4, TINY["vocab_size"], (2, 45))
    attention_mask = torch.ones(2, 45, dtype=torch.long)
    attention_mask[1, 30:] = 0
    global_mask = torch.zeros(2, 45, dtype=torch.long)
    global_mask[:, 0] = 1
    with torch.no_grad():
        out = model.encoder(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask)[0]
        assert calls and all(c is not None for c in calls)
        with kernels.disabled():
            expected = model.encoder(input_ids=ids, attention_mask=attention_mask, global_attention_mask=global_mask)[0]
    assert relative_error(out, expected) < TOL
