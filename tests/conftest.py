"""Shared fixtures: tiny random LED checkpoints written by transformers' own ``save_pretrained``.

Nothing can be downloaded here, so every reference model is built on the fly. ``init_std`` 0.3 makes the
outputs depend on the input (with the default 0.02 a random model says the same thing whatever it reads).
"""
from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to ``count`` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize_biases_and_norms(model) -> None:
    """Biases and layer norms drawn at random (they are zeros and ones at init, where a dropped bias or a
    swapped norm weight would go unnoticed)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.normal_(1.0 if name.endswith("norm.weight") else 0.0, 0.2)


def encoded_inputs(model, inputs: int, length: int, pad_step: int):
    """The encoder output of ``inputs`` random rows of ``length`` tokens, row r right-padded by
    ``pad_step * r`` tokens (different lengths: a cross-attention mask must apply per input), and the mask."""
    generator = torch.Generator().manual_seed(inputs)
    ids = torch.randint(3, model.config.vocab_size, (inputs, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, inputs):
        mask[row, length - pad_step * row :] = 0
    with torch.no_grad():
        return model.led.encoder(ids, attention_mask=mask).last_hidden_state, mask


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


PIPE_SHAPE = dict(TINY, vocab_size=500, max_encoder_position_embeddings=512, max_decoder_position_embeddings=64)


def make_pipeline_checkpoint(transformers, cls_name, path, seed=0, **changes):
    """A tiny HuggingFace LED directory of ``cls_name`` with a BART-style tokenizer beside the weights, the
    layout of a real ``allenai/led-base-16384`` download."""
    from tokenizer_fixture import make_tokenizer_dir

    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(transformers.LEDConfig(**{**PIPE_SHAPE, **changes})).eval()
    model.save_pretrained(path)
    make_tokenizer_dir(path, vocab_size=PIPE_SHAPE["vocab_size"])
    return path


@pytest.fixture(scope="session")
def summarizer_checkpoint(transformers_led, tmp_path_factory):
    return make_pipeline_checkpoint(transformers_led, "LEDForConditionalGeneration", tmp_path_factory.mktemp("sum"))


@pytest.fixture(scope="session")
def qa_checkpoint(transformers_led, tmp_path_factory):
    return make_pipeline_checkpoint(transformers_led, "LEDForQuestionAnswering", tmp_path_factory.mktemp("qa"), seed=3)


@pytest.fixture(scope="session")
def classifier_checkpoint(transformers_led, tmp_path_factory):
    """transformers 5 has no LEDForSequenceClassification: the weights come from spacy-led itself."""
    from spacy_led.modeling import LEDConfig, LEDForSequenceClassification
    from tokenizer_fixture import make_tokenizer_dir

    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("cls")
    config = LEDConfig(**PIPE_SHAPE, id2label={0: "science", 1: "sports", 2: "law"})
    LEDForSequenceClassification(config).eval().save_pretrained(path)
    make_tokenizer_dir(path, vocab_size=PIPE_SHAPE["vocab_size"])
    return path


LONG_TEXT = (
    "The court reviewed the contract in detail. Both parties agreed to the terms in 2019!  Then the dispute began.\n"
    "Witnesses described the café meeting in Zürich; one said 東京 was mentioned twice. Was the payment late? "
    "The judge asked who signed first. Nobody answered at once.\tLater the clerk read the record aloud. "
)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty HuggingFace cache that huggingface_hub uses, offline (its constants are read at import, so the
    module attributes are patched rather than the environment). A test that reaches for the network fails."""
    import huggingface_hub as hub

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    network_calls = []

    def no_network(*args, **kwargs):
        network_calls.append(args)
        raise ConnectionError("offline test")

    monkeypatch.setattr(hub, "list_repo_files", no_network)
    monkeypatch.setattr(hub, "snapshot_download", no_network)
    yield cache
    assert not network_calls, f"offline resolution tried to reach the hub: {network_calls}"

# Short texts with the cases a summarizer must survive: several sentences, non-ASCII and emoji, a one-word text,
# a long text, and a question. Tests that also need an empty document add "" themselves.
SAMPLE_TEXTS = [
    "The court reviewed the contract. Both parties agreed.",
    "Witnesses described the café meeting in Zürich;  one said 東京 twice. 😀",
    "Short.",
    LONG_TEXT,
    "Hello world! The quick brown fox jumps over the lazy dog. Was it quick?",
]


@pytest.fixture
def compiled_kernels():
    """The compiled CPU kernels (spacy_led/modeling/kernels.py); skips where they cannot run (not Linux x86-64
    with AVX2/FMA, or no C compiler), fails where they should build and do not."""
    import os
    import shutil

    from spacy_led.modeling import kernels

    if kernels._cpu_supported() is not None or shutil.which(os.environ.get("CC") or "cc") is None:
        pytest.skip("the compiled kernels run on Linux x86-64 with AVX2/FMA and a C compiler only")
    lib = kernels.library()
    assert lib is not None, "the kernels did not build on a machine that supports them"
    return lib
