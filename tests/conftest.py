"""Shared fixtures: tiny random LED checkpoints written by transformers' own ``save_pretrained``.

Nothing can be downloaded here, so every reference model is built on the fly. ``init_std`` 0.3 makes the
outputs depend on the input (with the default 0.02 a random model says the same thing whatever it reads).
"""
from __future__ import annotations

import pytest
import torch

TINY = dict(
    vocab_size=99,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=37,
    decoder_ffn_dim=37,
    attention_window=[8, 16],
    max_encoder_position_embeddings=4096,
    max_decoder_position_embeddings=128,
    init_std=0.3,
)


def relative_error(actual: torch.Tensor, expected: torch.Tensor, floor: float = 1e-12) -> float:
    """max |actual - expected| relative to max |expected| (the float32 parity measure used throughout).

    ``floor`` bounds the scale from below, for tensors that are zero up to rounding noise (the gradient of a
    key bias, which cancels in the softmax)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.detach().abs().max().clamp_min(floor)
    return float((actual.detach() - expected.detach()).abs().max() / scale)


def make_batch(batch=3, length=123, vocab=99, pad_lengths=(123, 100, 50), globals_per_row=((0, 7, 60), (0,), ()), seed=0):
    """Right-padded ids, attention mask and a global mask with different counts per row (none in one)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, length), generator=generator)
    mask = torch.zeros(batch, length, dtype=torch.long)
    glob = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        n = pad_lengths[row]
        mask[row, :n] = 1
        ids[row, 0] = 0
        ids[row, n - 1] = 2
        ids[row, n:] = 1
        for pos in globals_per_row[row]:
            glob[row, pos] = 1
    return ids, mask, glob


@pytest.fixture(scope="session")
def transformers_led():
    return pytest.importorskip("transformers")


def _save_reference(transformers, cls_name, tmp_path_factory, name, seed=0, **changes):
    torch.manual_seed(seed)
    config = transformers.LEDConfig(**{**TINY, **changes})
    model = getattr(transformers, cls_name)(config).eval()
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="session")
def hf_generation_checkpoint(transformers_led, tmp_path_factory):
    """(transformers model, checkpoint dir) for LEDForConditionalGeneration."""
    return _save_reference(transformers_led, "LEDForConditionalGeneration", tmp_path_factory, "led_cg")


@pytest.fixture(scope="session")
def hf_qa_checkpoint(transformers_led, tmp_path_factory):
    return _save_reference(transformers_led, "LEDForQuestionAnswering", tmp_path_factory, "led_qa", seed=1)


@pytest.fixture(scope="session")
def hf_base_checkpoint(transformers_led, tmp_path_factory):
    return _save_reference(transformers_led, "LEDModel", tmp_path_factory, "led_base", seed=2)
