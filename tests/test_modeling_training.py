"""Training switches (dropout, gradient checkpointing, bfloat16) and clear errors for bad input."""
import pytest
import torch

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration
from spacy_led.modeling.attention import LEDEncoderSelfAttention
from spacy_led.modeling.model import LEDEncoderLayer

from conftest import TINY, make_batch, relative_error


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LEDForConditionalGeneration(LEDConfig(**{**TINY, "dropout": 0.0})).eval()


def _loss(model, **extra):
    ids, mask, glob = make_batch(length=60, pad_lengths=(60, 40, 33), globals_per_row=((0, 9), (0,), ()))
    labels = torch.randint(4, TINY["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(1))
    return model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=labels, **extra).loss


def test_dropout_only_in_train_mode():
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig(**{**TINY, "dropout": 0.3, "attention_dropout": 0.2}))
    model.train()
    assert not torch.equal(_loss(model), _loss(model))
    model.eval()
    with torch.no_grad():
        assert torch.equal(_loss(model), _loss(model))


@pytest.mark.parametrize("chunked", [False, True], ids=["whole_layers", "chunks_inside_layers"])
def test_gradient_checkpointing_gives_the_same_gradients(model, chunked, monkeypatch):
    """Checkpointing recomputes each layer, and inside encoder layers longer than a chunk each chunk of tokens
    (feed-forward) and of query blocks (attention) alone; small chunks here make several of each."""
    if chunked:
        monkeypatch.setattr(LEDEncoderLayer, "chunk_tokens", 16)  # 60 tokens: 4 chunks
        monkeypatch.setattr(LEDEncoderSelfAttention, "chunk_tokens", 8)  # windows 8, 16: 2 and 1 blocks a chunk
    model.train()  # dropout 0: train mode without randomness
    model.zero_grad()
    _loss(model).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    try:
        _loss(model).backward()
        checkpointed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad()
        model.eval()
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        assert relative_error(checkpointed[name], plain[name], floor=1e-2) <= 1e-5, name


def test_checkpointing_keeps_no_cross_attention_keys_until_backward(model):
    """With checkpointing, each decoder layer projects the encoder output to its cross-attention keys and
    values inside the checkpoint, so between forward and backward none of them is alive (at 16k tokens they
    would be 100 MB per layer); only the encoder output is kept."""
    import gc

    model.train()
    model.gradient_checkpointing_enable()
    try:
        loss = _loss(model)  # batch 3, 60 input tokens
        gc.collect()
        heads, head_dim = TINY["decoder_attention_heads"], TINY["d_model"] // TINY["decoder_attention_heads"]
        cross_shaped = [obj for obj in gc.get_objects()
                        if isinstance(obj, torch.Tensor) and tuple(obj.shape) == (3, heads, 60, head_dim)]
        loss.backward()  # and the graph still computes the gradients
        assert model.led.decoder.layers[0].encoder_attn.k_proj.weight.grad is not None
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad()
        model.eval()
    assert cross_shaped == []


def test_bfloat16_on_cpu_trains_and_stays_close_to_float32(model):
    with torch.no_grad():
        reference = _loss(model)
    half = LEDForConditionalGeneration(model.config)
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16).train()
    loss = _loss(half)
    loss.backward()
    assert loss.dtype == torch.float32  # the loss is computed in float32
    assert abs(loss.detach().item() - reference.item()) <= 0.05 * reference.item()
    assert all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: dict(b, input_ids=b["input_ids"][:, :0], attention_mask=None, global_attention_mask=None), "is empty"),
        (lambda b: dict(b, input_ids=b["input_ids"][0]), r"shape \(batch, length\)"),
        (lambda b: dict(b, attention_mask=b["attention_mask"][:, :5]), "attention_mask has shape"),
        (lambda b: dict(b, global_attention_mask=b["global_attention_mask"][:2]), "global_attention_mask has shape"),
        (lambda b: dict(b, input_ids=b["input_ids"].clone().fill_(500)), "outside the vocabulary"),
        (lambda b: dict(b, decoder_input_ids=torch.zeros(3, 200, dtype=torch.long)), r"only 128 positions \(max_decoder_position_embeddings\)"),
    ],
)
def test_bad_input_gets_a_clear_error(model, change, message):
    ids, mask, glob = make_batch(length=30, pad_lengths=(30, 20, 10), globals_per_row=((0,), (), ()))
    batch = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
    with pytest.raises(ValueError, match=message):
        model(**change(batch))


def test_too_long_input_names_length_and_limit(model):
    ids = torch.full((1, TINY["max_encoder_position_embeddings"] + 1), 5)
    with pytest.raises(ValueError, match=r"4097 tokens but the model has only 4096 positions"):
        model(input_ids=ids)


def test_set_labels_gives_a_fresh_head_for_other_labels_and_keeps_the_rest():
    from spacy_led.modeling import LEDForSequenceClassification

    torch.manual_seed(0)
    model = LEDForSequenceClassification(LEDConfig(**TINY, id2label={0: "a", 1: "b", 2: "c"})).eval()
    head, encoder_weight = model.classification_head, model.led.encoder.layers[0].fc1.weight.detach().clone()
    model.set_labels(["a", "b", "c"], problem_type="multi_label_classification")
    assert model.classification_head is head  # same labels: the trained head stays
    assert model.config.problem_type == "multi_label_classification"
    model.set_labels(["x", "y"])
    assert model.config.id2label == {0: "x", 1: "y"} and model.config.num_labels == 2
    assert model.classification_head is not head
    assert model.classification_head.out_proj.weight.shape == (2, TINY["d_model"])
    assert float(model.classification_head.out_proj.weight.detach().std()) == pytest.approx(TINY["init_std"], rel=0.3)
    assert torch.equal(model.led.encoder.layers[0].fc1.weight, encoder_weight)
    ids, mask, glob = make_batch()
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=mask, global_attention_mask=glob).logits.shape == (3, 2)
    with pytest.raises(ValueError, match="at least one label"):
        model.set_labels([])
