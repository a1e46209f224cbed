"""Which parameters receive a gradient, and the gradients themselves, against transformers' LED.

Distributed training needs the reference's exact set: ``DistributedDataParallel`` (with its default
``find_unused_parameters=False``) waits for a gradient of every parameter, and an optimizer skips a parameter
whose ``.grad`` is None (no weight decay). So a parameter whose gradient is mathematically zero (a key bias,
which cancels in the softmax) must still get a zero tensor wherever transformers gives one, and the ``*_global``
projections none when no token is global, as in transformers.

Tolerance: each gradient within 1e-4 of the reference, relative to the larger of its own largest value and 1%
of the model's largest gradient (gradients that are zero up to rounding noise, ~1e-8, are compared at that
scale instead of their own).
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spacy_led.modeling import LEDForConditionalGeneration, LEDForQuestionAnswering, LEDForSequenceClassification
from spacy_led.modeling.attention import LEDEncoderSelfAttention
from spacy_led.modeling.model import LEDEncoderLayer

from conftest import TINY, make_batch, relative_error

GRAD_TOL = 1e-4

# name: (length, real lengths per row, global positions per row). TINY's windows are 8 and 16 (one-sided 4
# and 8); 12 global tokens x 4 heads >= d_model 32 takes the direct (unfolded) global path, fewer the folded.
CASES = {
    "one_global_padded": (70, (70, 52, 31), ((0,), (0,), (0,))),
    "one_global_unpadded": (70, (70, 70, 70), ((0,), (0,), (0,))),
    "mixed_globals_padded": (70, (70, 52, 31), ((0, 33), (0,), ())),
    "many_globals_padded": (70, (70, 52, 31), (tuple(range(0, 60, 5)), (1, 2), (0,))),
    "short_dense_block_globals": (10, (10, 7, 10), ((0,), (), (3, 9))),
    "no_global_padded": (70, (70, 52, 31), ((), (), ())),
    "no_global_unpadded": (70, (70, 70, 70), ((), (), ())),
}


def assert_same_gradients(ours: torch.nn.Module, reference_grads: dict) -> int:
    """The same parameters hold a gradient as in the reference, and the gradients agree. Returns how many
    were compared."""
    ours_with_grad = {name for name, param in ours.named_parameters() if param.grad is not None}
    assert ours_with_grad == set(reference_grads), (
        f"only ours: {sorted(ours_with_grad - set(reference_grads))}, "
        f"only the reference: {sorted(set(reference_grads) - ours_with_grad)}"
    )
    largest = max(float(grad.abs().max()) for grad in reference_grads.values())
    assert largest > 1e-2  # the 1% floor below stays far under the real gradients
    for name, grad in reference_grads.items():
        assert relative_error(ours.get_parameter(name).grad, grad, floor=1e-2 * largest) <= GRAD_TOL, name
    return len(reference_grads)


def _backward(model, kwargs) -> None:
    model.zero_grad(set_to_none=True)
    model(**kwargs).loss.backward()


def _inputs(case, head):
    length, lengths, globals_ = CASES[case]
    ids, mask, glob = make_batch(length=length, pad_lengths=lengths, globals_per_row=globals_)
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    if head == "lm":
        labels = torch.randint(4, TINY["vocab_size"], (3, 9), generator=torch.Generator().manual_seed(1))
        labels[2, 6:] = -100
        kwargs["labels"] = labels
    else:
        kwargs["start_positions"] = torch.tensor([1, 3, 2])
        kwargs["end_positions"] = torch.tensor([4, 5, 6])
    return kwargs


@pytest.fixture(scope="module")
def pairs(hf_generation_checkpoint, hf_qa_checkpoint):
    lm_reference, lm_path = hf_generation_checkpoint
    qa_reference, qa_path = hf_qa_checkpoint
    return {
        "lm": (lm_reference, LEDForConditionalGeneration.from_pretrained(lm_path).eval()),
        "qa": (qa_reference, LEDForQuestionAnswering.from_pretrained(qa_path).eval()),
    }


@pytest.mark.parametrize("head", ["lm", "qa"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_and_their_set_match_transformers(pairs, head, case):
    reference, ours = pairs[head]
    kwargs = _inputs(case, head)
    _backward(reference, kwargs)
    _backward(ours, kwargs)
    reference_grads = {name: param.grad for name, param in reference.named_parameters() if param.grad is not None}
    compared = assert_same_gradients(ours, reference_grads)
    global_projections = {name for name in reference_grads if "_global." in name}
    if any(CASES[case][2]):
        assert len(global_projections) == 6 * TINY["encoder_layers"]  # key_global.bias included
    else:
        assert not global_projections  # unused without global tokens, in both implementations
    assert compared >= 90
    reference.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)


def test_chunked_gradient_checkpointing_matches_transformers(hf_generation_checkpoint, monkeypatch):
    """Gradient checkpointing with chunks inside the encoder layers (small chunks: several per layer) against
    transformers' gradients: the same parameters get one, and the same values."""
    monkeypatch.setattr(LEDEncoderLayer, "chunk_tokens", 16)
    monkeypatch.setattr(LEDEncoderSelfAttention, "chunk_tokens", 8)
    reference, path = hf_generation_checkpoint
    ours = LEDForConditionalGeneration.from_pretrained(path, dropout=0.0).train()  # checkpointing acts in train()
    ours.gradient_checkpointing_enable()
    kwargs = _inputs("mixed_globals_padded", "lm")
    _backward(reference, kwargs)
    _backward(ours, kwargs)
    reference_grads = {name: param.grad for name, param in reference.named_parameters() if param.grad is not None}
    assert assert_same_gradients(ours, reference_grads) >= 90
    reference.zero_grad(set_to_none=True)


CLASSIFICATION_FIXTURE = Path(__file__).parent / "fixtures" / "led_cls_tiny"


@pytest.fixture(scope="module")
def classification_cases():
    """transformers 5 has no LEDForSequenceClassification: the reference gradients were computed with 4.46.3
    and committed (tests/fixtures/make_led_cls_fixture.py)."""
    tensors = load_file(str(CLASSIFICATION_FIXTURE / "gradients.safetensors"))
    cases = {}
    for key, value in tensors.items():
        case, _, field = key.partition(".")
        cases.setdefault(case, {})[field] = value
    return cases


@pytest.mark.parametrize("case", ["first_token_unpadded", "mixed_padded", "many_padded", "none_padded"])
def test_classification_gradients_and_their_set_match_transformers_4(classification_cases, case):
    tensors = classification_cases[case]
    model = LEDForSequenceClassification.from_pretrained(CLASSIFICATION_FIXTURE / "safetensors").eval()
    inputs = {name: tensors[name] for name in ("input_ids", "attention_mask", "global_attention_mask", "labels")}
    _backward(model, inputs)
    reference_grads = {key[len("grad."):]: value for key, value in tensors.items() if key.startswith("grad.")}
    assert_same_gradients(model, reference_grads)
    has_global = bool(inputs["global_attention_mask"].any())
    assert any("_global." in name for name in reference_grads) == has_global
    assert len(reference_grads) >= 90
