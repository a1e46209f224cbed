"""The reference setup of the generation tests: a tiny random transformers LED and spacy-led's copy of it.

The reference models are tiny and random with ``init_std`` 0.3, so the output depends on the input (with the
default 0.02 a random decoder says the same thing whatever it reads), and a bias on ``</s>`` in
``final_logits_bias`` so that sequences end at different lengths: finished rows, padding, finished beam
hypotheses and early stopping are all exercised, not only the max-length path. transformers puts no global
attention anywhere by default and spacy-led puts it on the first token, so every parity call passes
``global_attention_mask`` to both.
"""
import warnings

import pytest
import torch

from spacy_led.modeling import LEDForConditionalGeneration

from conftest import TINY

transformers = pytest.importorskip("transformers")

PAD, EOS, START = 1, 2, 2
DECODER_POSITIONS = 128
CONFIG = dict(TINY, max_encoder_position_embeddings=2560, max_decoder_position_embeddings=DECODER_POSITIONS)
EOS_BIAS = 2.0  # with seed 2: some rows end after a few tokens, others run to max_length


def reference_model(seed: int = 2):
    torch.manual_seed(seed)
    model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**CONFIG)).eval()
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = EOS_BIAS
    return model


def load_pair(path):
    """(transformers model, spacy-led model loaded from the checkpoint transformers saved in ``path``)."""
    reference = reference_model()
    reference.save_pretrained(path)
    return reference, LEDForConditionalGeneration.from_pretrained(path).eval()


def batch(seed: int = 0):
    """Right-padded rows of 57, 40 and 9 real tokens; 3, 1 and no global tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, CONFIG["vocab_size"], (3, 57), generator=generator)
    mask = torch.zeros_like(ids)
    glob = torch.zeros_like(ids)
    for row, (length, globals_) in enumerate(zip((57, 40, 9), ((0, 11, 30), (0,), ()), strict=True)):
        ids[row, 0], ids[row, length - 1], ids[row, length:] = 0, EOS, PAD
        mask[row, :length] = 1
        glob[row, list(globals_)] = 1
    return ids, mask, glob


def big_batch(rows: int = 12, seed: int = 3):
    """Enough inputs that one finishing does not make spacy-led drop it from the batch at once."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 40, (rows,), generator=generator)
    ids = torch.randint(4, CONFIG["vocab_size"], (rows, 40), generator=generator)
    positions = torch.arange(40)
    mask = (positions < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, PAD)
    glob = (positions % 7 == 0).long() * mask
    glob[::4] = 0
    return ids, mask, glob


def generate_both(models, ids, mask, glob, seed=None, **kwargs):
    """(spacy-led's output, transformers' output) for the same arguments; with ``seed``, each call starts from
    ``torch.manual_seed(seed)``."""
    reference, ours = models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' advice about max_length defaults
        if seed is not None:
            torch.manual_seed(seed)
        expected = reference.generate(ids, attention_mask=mask, global_attention_mask=glob, **kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    actual = ours.generate(ids, attention_mask=mask, global_attention_mask=glob, **kwargs)
    return actual, expected


def assert_same(actual, expected):
    assert actual.dtype == torch.long
    assert actual.shape == expected.shape, (actual, expected)
    assert torch.equal(actual, expected), (actual, expected)


def ended_early(sequences) -> bool:
    """Some sequence finished before the others (it is padded after its </s>)."""
    return bool((sequences[:, 1:] == PAD).any())
