"""``quantize = "int8"``: dynamic int8 Linear layers (spacy_led/modeling/quantize.py), the component setting that
turns them on (and is saved with the pipeline), and ``spacy-led apply --quantize int8``. Speed and drift on
led-base shapes are measured by benchmarks/bench_int8.py, not here."""
import json

import pytest
import spacy
import torch
from torch import nn

from spacy_led import cli
from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration
from spacy_led.modeling.quantize import KEEP_FLOAT, DynamicInt8Linear, quantize_dynamic_int8

from conftest import LONG_TEXT, SAMPLE_TEXTS, TINY, make_batch, relative_error

# Max |int8 - float32| relative to max |float32|. One layer: int8 weights (per-row scales) times 7-bit activations
# (one scale per call) err by ~1-2% of the largest output; 2.5% leaves room for the draw. The whole tiny model at a
# trained model's weight scale (init_std 0.02) measures 1.1-1.2%; 3% is the bound asserted.
LAYER_TOLERANCE = 0.025
MODEL_TOLERANCE = 0.03
FAST = {"num_beams": 1, "max_summary_length": 8}


def tiny_model(seed=0, init_std=0.02):
    torch.manual_seed(seed)
    return LEDForConditionalGeneration(LEDConfig(**{**TINY, "init_std": init_std})).eval()


def test_a_quantized_layer_is_int8_and_close_to_its_float_layer():
    torch.manual_seed(0)
    linear = nn.Linear(48, 40)
    layer = DynamicInt8Linear(linear)
    assert layer.int8_weight.dtype == torch.int8 and layer.int8_weight.shape == (40, 48)
    assert layer.weight_scale.shape == (40,)
    assert relative_error(layer.int8_weight.float() * layer.weight_scale[:, None], linear.weight) < 0.01
    x = torch.randn(2, 7, 48)
    with torch.no_grad():
        assert relative_error(layer(x), linear(x)) < LAYER_TOLERANCE
    with pytest.raises(TypeError, match="float32 inputs"):
        layer(x.double())


def test_every_linear_but_the_folded_global_projections_is_quantized_in_a_copy():
    model = tiny_model()
    quantized = quantize_dynamic_int8(model)
    names = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    int8 = {name for name, m in quantized.named_modules() if isinstance(m, DynamicInt8Linear)}
    kept = {name for name, m in quantized.named_modules() if type(m) is nn.Linear}
    assert int8 and kept == {n for n in names if n.rsplit(".", 1)[-1] in KEEP_FLOAT} and int8 | kept == names
    assert "lm_head" in int8
    # the float model is unchanged and still what trains; the copy shares its other weights
    assert all(type(m) is nn.Linear for name, m in model.named_modules() if name in int8)
    assert quantized.led.shared.weight is model.led.shared.weight


def test_quantized_outputs_stay_close_to_float32():
    model = tiny_model()
    quantized = quantize_dynamic_int8(model)
    ids, mask, glob = make_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :20])
    with torch.no_grad():
        expected, actual = model(**inputs).logits, quantized(**inputs).logits
    assert relative_error(actual, expected) < MODEL_TOLERANCE


def test_float_and_bfloat16_models_are_refused_clearly():
    with pytest.raises(ValueError, match="needs a float32 model on the CPU"):
        quantize_dynamic_int8(tiny_model().to(torch.bfloat16))


def test_an_unknown_quantization_is_a_clear_error():
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="quantize='int4' is not supported: use 'int8'"):
        nlp.add_pipe("led_summarizer", config={"quantize": "int4"})
    assert nlp.add_pipe("led_classifier").cfg["quantize"] is None  # float32 is the default


def test_the_setting_is_saved_with_the_pipeline_and_used_after_loading(summarizer_checkpoint, tmp_path):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), "quantize": "int8", **FAST})
    docs = list(nlp.pipe(SAMPLE_TEXTS))
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    loaded_pipe = loaded.get_pipe("led_summarizer")
    assert loaded.config["components"]["led_summarizer"]["quantize"] == "int8" and loaded_pipe.cfg["quantize"] == "int8"
    assert any(isinstance(m, DynamicInt8Linear) for m in loaded_pipe.inference_module.modules())
    assert not any(isinstance(m, DynamicInt8Linear) for m in loaded_pipe.module.modules())  # float weights saved
    # the same float weights quantize to the same int8 model: the same summaries
    assert [d._.summary for d in loaded.pipe(SAMPLE_TEXTS)] == [d._.summary for d in docs]
    assert pipe.cfg["quantize"] == "int8"


def test_the_int8_copy_follows_changes_of_the_float_weights(classifier_checkpoint):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint), "quantize": "int8"})
    pipe.load()
    first = pipe.inference_module
    assert pipe.inference_module is first  # made once while the weights stay
    head = pipe.module.classification_head.out_proj
    with torch.no_grad():
        head.weight.mul_(2.0)  # what an optimizer step or loading weights does: an in-place write
    second = pipe.inference_module
    assert second is not first
    assert torch.allclose(second.classification_head.out_proj.weight_scale,
                          2 * first.classification_head.out_proj.weight_scale)
    pipe.cfg["quantize"] = None
    assert pipe.inference_module is pipe.module


def test_apply_quantize_int8(classifier_checkpoint, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in [*SAMPLE_TEXTS, LONG_TEXT]), encoding="utf8")
    outputs = {}
    for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"])):
        out = tmp_path / f"{name}.jsonl"
        args = ["apply", "--checkpoint", str(classifier_checkpoint), "--task", "classify", "--no-progress", *extra,
                str(src), str(out)]
        assert cli.main(args) == 0
        outputs[name] = [json.loads(line) for line in out.read_text(encoding="utf8").splitlines()]
    assert len(outputs["int8"]) == len(outputs["fp32"]) == len(SAMPLE_TEXTS) + 1
    differences = [abs(q["cats"][label] - f["cats"][label])
                   for q, f in zip(outputs["int8"], outputs["fp32"], strict=True) for label in f["cats"]]
    # int8 ran: the scores move, but stay close to float32's
    assert 0 < max(differences) < 0.05


def test_apply_rejects_quantize_on_a_gpu(classifier_checkpoint, tmp_path, capsys):
    args = ["apply", "--checkpoint", str(classifier_checkpoint), "--task", "classify", "--quantize", "int8",
            "--gpu-id", "0", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")]
    assert cli.main(args) == 2
    assert "--quantize int8 runs on the CPU" in capsys.readouterr().err


def test_apply_quantize_is_refused_for_a_component_on_another_runtime():
    from spacy_led.apply import ApplyOptions
    from spacy_led.apply.options import UsageError
    from spacy_led.apply.pipeline import configure

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_classifier")
    pipe.cfg["runtime"] = "onnx"  # as a saved pipeline with runtime = "onnx" has it
    with pytest.raises(UsageError, match="--quantize int8 applies to the torch runtime"):
        configure(nlp, ApplyOptions("in.jsonl", "out.jsonl", model="pipeline", quantize="int8"))
    assert pipe.cfg["quantize"] is None
