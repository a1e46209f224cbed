"""LEDForSequenceClassification against transformers 4.46.3's numbers (tests/fixtures/led_cls_tiny).

transformers 5 removed the head, so the reference outputs were computed once with 4.46.3 and committed with
the script that made them (tests/fixtures/make_led_cls_fixture.py).
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spacy_led.modeling import LEDForSequenceClassification

from conftest import relative_error

FIXTURE = Path(__file__).parent / "fixtures" / "led_cls_tiny"
TOL = 1e-5


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURE / "expected.safetensors"))


def _inputs(expected):
    return dict(
        input_ids=expected["input_ids"],
        attention_mask=expected["attention_mask"],
        global_attention_mask=expected["global_attention_mask"],
    )


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_logits_and_states_match_transformers_4(expected, layout):
    """Both the safetensors checkpoint and the old .bin one (with tied embedding copies) load and agree."""
    model = LEDForSequenceClassification.from_pretrained(FIXTURE / layout)
    assert model.config.num_labels == 3
    with torch.no_grad():
        out = model(**_inputs(expected))
    keep = expected["attention_mask"].bool()
    assert relative_error(out.logits, expected["logits"]) <= TOL
    assert relative_error(out.encoder_last_hidden_state[keep], expected["encoder_last_hidden_state"][keep]) <= TOL
    assert relative_error(out.last_hidden_state[keep], expected["last_hidden_state"][keep]) <= TOL


def test_single_and_multi_label_losses_and_gradients(expected):
    model = LEDForSequenceClassification.from_pretrained(FIXTURE / "safetensors")
    out = model(**_inputs(expected), labels=expected["labels_single"])
    assert relative_error(out.loss, expected["loss_single"]) <= TOL
    out.loss.backward()
    grads = {k[len("grad."):]: v for k, v in expected.items() if k.startswith("grad.")}
    assert len(grads) == 3
    for name, reference in grads.items():
        assert relative_error(model.get_parameter(name).grad, reference) <= 1e-4, name

    multi = LEDForSequenceClassification.from_pretrained(FIXTURE / "safetensors", problem_type="multi_label_classification")
    with torch.no_grad():
        out = multi(**_inputs(expected), labels=expected["labels_multi"])
    assert relative_error(out.loss, expected["loss_multi"]) <= TOL
    # Float labels alone also select the multi-label loss, as in transformers.
    with torch.no_grad():
        inferred = model(**_inputs(expected), labels=expected["labels_multi"])
    assert relative_error(inferred.loss, expected["loss_multi"]) <= TOL


def test_rows_with_different_eos_counts_pool_their_own_last_eos(expected):
    """transformers 4 refuses rows with different numbers of </s>; each row's last </s> is what it pools."""
    model = LEDForSequenceClassification.from_pretrained(FIXTURE / "safetensors")
    ids = expected["input_ids"].clone()
    ids[0, 10] = 2  # an extra </s> inside row 0: row 0 still pools its last one
    inputs = dict(_inputs(expected), input_ids=ids)
    with torch.no_grad():
        out = model(**inputs)
        states = model.led(**inputs).last_hidden_state
        last = [int((row == 2).nonzero().max()) for row in ids]
        manual = model.classification_head(states[torch.arange(3), last])
    assert torch.equal(out.logits, manual)
    ids[2, :] = 5
    with pytest.raises(ValueError, match="no </s>"):
        model(**dict(inputs, input_ids=ids))
