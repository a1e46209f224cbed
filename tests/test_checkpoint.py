"""Checkpoint directories: loading transformers' layouts, writing ones transformers loads, clear errors."""
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, LEDForQuestionAnswering, LEDModel
from spacy_led.modeling.checkpoint import CheckpointError

from conftest import TINY, make_batch, relative_error


def _logits(model, **kwargs):
    ids, mask, glob = make_batch()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, **kwargs).logits


def test_save_pretrained_loads_in_transformers_with_same_outputs(transformers_led, hf_generation_checkpoint, tmp_path):
    _, path = hf_generation_checkpoint
    ours = LEDForConditionalGeneration.from_pretrained(path)
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["LEDForConditionalGeneration"]
    reloaded = transformers_led.LEDForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert relative_error(_logits(reloaded), _logits(ours)) <= 1e-5
    # ... and in spacy-led again, bit for bit.
    assert torch.equal(_logits(LEDForConditionalGeneration.from_pretrained(tmp_path)), _logits(ours))


def test_tied_embeddings_stay_tied_after_loading(hf_generation_checkpoint):
    _, path = hf_generation_checkpoint
    model = LEDForConditionalGeneration.from_pretrained(path)
    shared = model.led.shared.weight
    assert model.lm_head.weight is shared
    assert model.led.encoder.embed_tokens.weight is shared and model.led.decoder.embed_tokens.weight is shared


def test_sharded_safetensors_load(transformers_led, hf_generation_checkpoint, tmp_path):
    reference, _ = hf_generation_checkpoint
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ours = LEDForConditionalGeneration.from_pretrained(tmp_path)
    assert relative_error(_logits(ours), _logits(reference)) <= 1e-5


def test_pickled_bin_with_tied_copies_loads_through_weights_only(hf_generation_checkpoint, tmp_path, monkeypatch):
    reference, path = hf_generation_checkpoint
    shutil.copy(path / "config.json", tmp_path / "config.json")
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")  # old layout: tied copies included
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ours = LEDForConditionalGeneration.from_pretrained(tmp_path)
    assert calls == [True]
    assert relative_error(_logits(ours), _logits(reference)) <= 1e-5


def test_base_model_loads_from_a_generation_checkpoint_and_back(hf_generation_checkpoint, tmp_path):
    reference, path = hf_generation_checkpoint
    base = LEDModel.from_pretrained(path)  # strips led., skips lm_head
    ids, mask, glob = make_batch()
    with torch.no_grad():
        expected = reference.led(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        actual = base(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
    assert relative_error(actual, expected) <= 1e-5
    base.save_pretrained(tmp_path)
    assert not any(k.startswith("led.") for k in load_file(str(tmp_path / "model.safetensors")))
    generation = LEDForConditionalGeneration.from_pretrained(tmp_path)  # adds led.; final_logits_bias -> zeros
    assert torch.equal(generation.final_logits_bias, torch.zeros_like(generation.final_logits_bias))
    assert torch.equal(generation.led.encoder.layers[0].fc1.weight, base.encoder.layers[0].fc1.weight)


def test_missing_task_head_is_initialised_with_a_warning_naming_it(hf_generation_checkpoint, caplog):
    _, path = hf_generation_checkpoint
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        qa = LEDForQuestionAnswering.from_pretrained(path)
    assert "qa_outputs.weight" in caplog.text and "freshly initialised" in caplog.text
    assert qa.qa_outputs.weight.abs().sum() > 0 and torch.isfinite(qa.qa_outputs.weight).all()
    assert torch.equal(qa.qa_outputs.bias, torch.zeros(2))


def test_dtype_and_config_overrides(hf_generation_checkpoint):
    _, path = hf_generation_checkpoint
    model = LEDForConditionalGeneration.from_pretrained(path, dtype=torch.bfloat16, dropout=0.2)
    assert model.dtype == torch.bfloat16 and model.config.dropout == 0.2
    assert not model.training


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.fixture()
def checkpoint_copy(hf_generation_checkpoint, tmp_path):
    _, path = hf_generation_checkpoint
    target = tmp_path / "ckpt"
    shutil.copytree(path, target)
    return target


def test_missing_directory_and_files(tmp_path, checkpoint_copy):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LEDForConditionalGeneration.from_pretrained(tmp_path / "nope")
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)
    (checkpoint_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)


def test_config_of_another_model_type(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["model_type"] = "bart"
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'bart'"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)


def _rewrite_weights(path, edit):
    weights = load_file(str(path / "model.safetensors"))
    edit(weights)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_unknown_and_misshapen_weights_are_named(checkpoint_copy):
    key = "led.encoder.layers.1.fc2.weight"
    original = load_file(str(checkpoint_copy / "model.safetensors"))

    _rewrite_weights(checkpoint_copy, lambda w: w.pop(key))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)

    _rewrite_weights(checkpoint_copy, lambda w: w.update({key: original[key], "led.encoder.layers.7.fc9.weight": original[key].clone()}))
    with pytest.raises(CheckpointError, match="layers.7.fc9"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)

    _rewrite_weights(checkpoint_copy, lambda w: (w.pop("led.encoder.layers.7.fc9.weight"), w.update({key: original[key][:, :5].contiguous()})))
    with pytest.raises(CheckpointError, match=r"fc2\.weight .*shape \(32, 5\)"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)


def test_corrupt_weight_file_names_the_file(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LEDForConditionalGeneration.from_pretrained(checkpoint_copy)


def test_config_round_trip_keeps_unknown_keys(tmp_path):
    config = LEDConfig.from_dict({**TINY, "model_type": "led", "transformers_version": "5.0", "num_labels": 4})
    assert config.num_labels == 4 and config.attention_window == [8, 16]
    config.save_pretrained(tmp_path)
    again = LEDConfig.from_pretrained(tmp_path)
    assert again == config and again.extra["transformers_version"] == "5.0"
    with pytest.raises(ValueError, match="positive even"):
        LEDConfig(**{**TINY, "attention_window": [8, 7]})


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_weight_names_are_the_stored_tensors_without_reading_them(kind):
    """What the components check a checkpoint's heads with: the names of the tensors in the files."""
    from pathlib import Path

    from spacy_led.modeling.checkpoint import read_state_dict, weight_names

    path = Path(__file__).parent / "fixtures" / "led_cls_tiny" / kind
    names = weight_names(path)
    assert names == set(read_state_dict(path))
    assert {"classification_head.out_proj.weight", "classification_head.dense.bias"} <= names
    assert not any(name.startswith("qa_outputs.") for name in names)
