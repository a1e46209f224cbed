"""The ONNX export in onnxruntime against the PyTorch model it was made from (tiny random models, init_std 0.3
so that outputs depend on the input): encoder states at lengths the graph was not traced at (window
multiples or not, 0/1/many global tokens, padding), the same generated ids for greedy and beam search, the
QA and classification heads (also past the decoder's positions), the CLI, and refusals of bad exports."""
import json

import numpy as np
import pytest
import torch

from spacy_led.cli import main
from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, LEDForQuestionAnswering, LEDForSequenceClassification
from spacy_led.modeling.attention import EncoderMaskLayout
from spacy_led.onnx import OnnxExportError, OnnxLED, export_module
from spacy_led.onnx.attention import ExportableEncoderSelfAttention, ExportLayout

import onnxruntime  # noqa: F401  (the `test` extra installs it: a missing install fails here, it is not skipped)

# Windows 8 and 4 (one-sided 4 and 2): layers differ, and the traced example (17 tokens) is no multiple of either.
SHAPE = dict(vocab_size=60, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_encoder_position_embeddings=64,
             max_decoder_position_embeddings=24, attention_window=[8, 4], init_std=0.3, dropout=0.0)
TOLERANCE = 1e-4


def _inputs(batch, length, n_global, padded_row=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, SHAPE["vocab_size"], (batch, length), generator=generator)
    ids[:, -1] = 2
    mask = torch.ones(batch, length, dtype=torch.long)
    glob = torch.zeros(batch, length, dtype=torch.long)
    glob[:, :n_global] = 1
    if padded_row is not None:  # a shorter row, with a global token inside and one on its padding
        keep = max(1, length // 2)
        mask[padded_row, keep:] = 0
        ids[padded_row, keep - 1] = 2
        ids[padded_row, keep:] = 1
        glob[padded_row, keep - 1] = 1
        glob[padded_row, -1] = 1
    return ids, mask, glob


# (batch, length, global tokens, padded row): window multiples and not, a single token, the whole position
# table, at most 3 windows (the model's dense path) and more, 0 / 1 / many global tokens, a padded batch.
CASES = [(1, 1, 1, None), (1, 5, 0, None), (2, 12, 1, 1), (1, 16, 1, None), (3, 23, 2, 2), (2, 40, 0, 1),
         (1, 37, 9, None), (2, 64, 3, 0)]


def test_exportable_attention_equals_the_model_kernel():
    """The export formulation (always blocked, always folded global rows, gathered back) against the model's
    kernel, in torch: any difference here is the formulation's, not onnxruntime's."""
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig(**SHAPE)).eval()
    for layer in model.led.encoder.layers:
        kernel = layer.self_attn.longformer_self_attn
        exportable = ExportableEncoderSelfAttention(kernel)
        for batch, length, n_global, padded in CASES:
            ids, mask, glob = _inputs(batch, length, n_global, padded)
            states = torch.randn(batch, length, SHAPE["d_model"])
            with torch.no_grad():
                expected, _ = kernel(states, EncoderMaskLayout.build(mask, glob))
                actual, _ = exportable(states, ExportLayout.build(mask, glob))
            assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max(), (length, n_global)


@pytest.fixture(scope="module")
def generation_export(tmp_path_factory):
    """A random generating LED saved as a checkpoint and exported once through the CLI."""
    torch.manual_seed(0)
    model = LEDForConditionalGeneration(LEDConfig(**SHAPE)).eval()
    checkpoint = tmp_path_factory.mktemp("onnx_ckpt")
    model.save_pretrained(checkpoint)
    out = tmp_path_factory.mktemp("onnx_gen")
    assert main(["export-onnx", str(checkpoint), str(out)]) == 0
    return model, OnnxLED(out)


@pytest.mark.parametrize("batch,length,n_global,padded", CASES)
def test_encoder_states_equal_pytorch(generation_export, batch, length, n_global, padded):
    model, runtime = generation_export
    ids, mask, glob = _inputs(batch, length, n_global, padded, seed=length)
    with torch.no_grad():
        expected = model.led.encoder(ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
    actual = runtime.encode(ids.numpy(), mask.numpy(), glob.numpy())
    assert actual.shape == tuple(expected.shape)
    assert np.abs(actual - expected.numpy()).max() <= TOLERANCE


GENERATION_SETTINGS = [
    dict(num_beams=1, max_new_tokens=12),
    dict(num_beams=3, max_new_tokens=12),
    dict(num_beams=4, max_length=10, min_length=6, length_penalty=0.6, no_repeat_ngram_size=2, early_stopping=True),
    dict(num_beams=2, max_new_tokens=8, num_return_sequences=2, forced_bos_token_id=7, forced_eos_token_id=2),
]


@pytest.mark.parametrize("settings", GENERATION_SETTINGS)
def test_generated_ids_equal_pytorch(generation_export, settings):
    model, runtime = generation_export
    ids, mask, glob = _inputs(3, 21, 1, padded_row=2, seed=5)
    expected = model.generate(ids, attention_mask=mask, global_attention_mask=glob, return_dict_in_generate=True,
                              **settings)
    actual = runtime.generate(ids.numpy(), attention_mask=mask.numpy(), global_attention_mask=glob.numpy(),
                              return_dict_in_generate=True, **settings)
    np.testing.assert_array_equal(actual.sequences, expected.sequences.numpy())
    np.testing.assert_allclose(actual.sequences_scores, expected.sequences_scores.numpy(), atol=1e-4)
    # The model reads its input: the rows differ, so equal ids are no accident of a constant output.
    assert len({tuple(row) for row in expected.sequences[:: settings.get("num_return_sequences", 1)].tolist()}) > 1


def test_generate_defaults_match_without_masks(generation_export):
    """No masks: every token attended, the first one global, as ``generate`` does."""
    model, runtime = generation_export
    ids, _, _ = _inputs(2, 30, 0, seed=9)
    np.testing.assert_array_equal(runtime.generate(ids, max_new_tokens=6), model.generate(ids, max_new_tokens=6).numpy())


@pytest.mark.parametrize("cls", [LEDForQuestionAnswering, LEDForSequenceClassification])
def test_heads_equal_pytorch_also_past_the_decoder_positions(cls, tmp_path):
    torch.manual_seed(1)
    model = cls(LEDConfig(**{**SHAPE, "encoder_layers": 1, "decoder_layers": 1, "attention_window": 8, "num_labels": 3})).eval()
    runtime = OnnxLED(export_module(model, tmp_path))
    # Exporting leaves every module of the model in eval mode (a graph left in train mode once switched the
    # model's dropout back on).
    assert not any(module.training for module in model.modules())
    for batch, length, n_global, padded in [(2, 9, 1, 1), (1, 24, 0, None), (2, 50, 3, 0)]:  # 50: 3 segments
        ids, mask, glob = _inputs(batch, length, n_global, padded, seed=length)
        with torch.no_grad():
            expected = model(ids, attention_mask=mask, global_attention_mask=glob)
        if cls is LEDForQuestionAnswering:
            start, end = runtime.question_answering(ids, mask, glob)
            assert np.abs(start - expected.start_logits.numpy()).max() <= TOLERANCE
            assert np.abs(end - expected.end_logits.numpy()).max() <= TOLERANCE
        else:
            assert np.abs(runtime.classify(ids, mask, glob) - expected.logits.numpy()).max() <= TOLERANCE


def test_an_export_of_other_weights_or_an_incomplete_one_is_refused(generation_export, tmp_path):
    model, runtime = generation_export
    runtime.check_matches(model, "the model")  # its own weights pass
    other = LEDForConditionalGeneration(LEDConfig(**SHAPE))
    with pytest.raises(OnnxExportError, match="other weights"):
        runtime.check_matches(other, "the other model")
    with pytest.raises(OnnxExportError, match="export-onnx"):
        OnnxLED(tmp_path)
    manifest = json.loads((runtime.path / "onnx_export.json").read_text())
    manifest["files"]["decoder_step"] = "missing.onnx"
    (tmp_path / "onnx_export.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxExportError, match="missing.onnx"):
        OnnxLED(tmp_path)
    with pytest.raises(ValueError, match="positions"):
        runtime.encode(np.ones((1, SHAPE["max_encoder_position_embeddings"] + 1), dtype=np.int64))
