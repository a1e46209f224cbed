"""LEDConfig takes and gives what transformers' LEDConfig does: its keyword arguments, its aliases, its label
settings, and ``from_pretrained`` keyword arguments that override the checkpoint's config."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import TINY

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, LEDForQuestionAnswering
from spacy_led.modeling.config import ATTRIBUTE_MAP


def _json(data):
    """What a dict becomes once written to config.json (int keys of id2label become strings)."""
    return json.loads(json.dumps(data))


def test_constructs_from_transformers_to_dict_and_keeps_every_key(transformers_led, tmp_path):
    hf = transformers_led.LEDConfig(
        **TINY,
        num_labels=3,
        problem_type="single_label_classification",
        architectures=["LEDForConditionalGeneration"],
        custom_setting={"kept": [1, 2]},
    )
    hf_dict = hf.to_dict()
    assert {"transformers_version", "architectures", "id2label", "label2id", "custom_setting"} <= set(hf_dict)
    config = LEDConfig(**hf_dict)
    assert config.to_dict() == _json(hf_dict)  # nothing dropped, renamed or changed
    assert config.transformers_version == hf_dict["transformers_version"] and config.custom_setting == {"kept": [1, 2]}
    assert config.id2label == hf.id2label and config.label2id == hf.label2id and config.num_labels == 3

    config.save_pretrained(tmp_path)
    assert LEDConfig.from_pretrained(tmp_path) == config
    reread = transformers_led.LEDConfig.from_pretrained(tmp_path)
    assert _json(reread.to_dict()) == _json(hf_dict)


def test_aliases_are_transformers_attribute_map(transformers_led):
    assert ATTRIBUTE_MAP == transformers_led.LEDConfig.attribute_map
    values = {"hidden_size": 48, "num_attention_heads": 8, "attention_probs_dropout_prob": 0.25,
              "initializer_range": 0.5, "num_hidden_layers": 3}
    assert set(values) == set(ATTRIBUTE_MAP)
    for alias, value in values.items():
        ours = LEDConfig(**{alias: value})
        hf = transformers_led.LEDConfig(**{alias: value})
        name = ATTRIBUTE_MAP[alias]
        assert getattr(ours, name) == getattr(hf, name) == value, alias
        assert getattr(ours, alias) == value, alias
        assert name in ours.to_dict() and alias not in ours.to_dict(), alias

    config = LEDConfig(d_model=64, encoder_attention_heads=4, decoder_attention_heads=4)
    config.hidden_size = 128
    assert config.d_model == 128 and "hidden_size" not in config.extra
    assert config.copy(num_hidden_layers=3, attention_window=8).encoder_layers == 3
    with pytest.raises(ValueError, match="hidden_size=64 and d_model=32"):
        LEDConfig(hidden_size=64, d_model=32, encoder_attention_heads=4, decoder_attention_heads=4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_labels": 3},
        {"num_labels": 1},
        {"id2label": {"0": "neg", "1": "pos", "2": "neutral"}},
        {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}},
        {"id2label": {0: "a", 1: "b", 2: "c"}, "num_labels": 3},
    ],
)
def test_label_settings_as_transformers(transformers_led, kwargs):
    ours, hf = LEDConfig(**kwargs), transformers_led.LEDConfig(**kwargs)
    assert ours.id2label == hf.id2label and all(isinstance(k, int) for k in ours.id2label)
    assert ours.num_labels == hf.num_labels
    if hf.label2id is not None:  # transformers 5 leaves label2id unset when only id2label is given
        assert ours.label2id == hf.label2id
    assert ours.label2id == {label: i for i, label in hf.id2label.items()}


def test_num_labels_setter_as_transformers(transformers_led):
    for start, value in ((dict(id2label={0: "a", 1: "b", 2: "c"}), 3), (dict(id2label={0: "a", 1: "b"}), 4), ({}, 5)):
        ours, hf = LEDConfig(**start), transformers_led.LEDConfig(**start)
        ours.num_labels = value
        hf.num_labels = value
        assert ours.id2label == hf.id2label, (start, value)
        assert ours.label2id == {label: i for i, label in hf.id2label.items()}, (start, value)


def test_label_settings_without_a_transformers_counterpart():
    # transformers 5 ignores label2id given alone; here it names the labels, as it does when read from JSON
    assert LEDConfig(label2id={"b": 1, "a": 0}).id2label == {0: "a", 1: "b"}
    config = LEDConfig()
    assert config.id2label is None and config.num_labels == 2 and config.label2id == {}
    assert "id2label" not in config.to_dict()
    config.label2id = {"x": 0, "y": 1, "z": 2}
    assert config.id2label == {0: "x", 1: "y", 2: "z"} and config.num_labels == 3
    with pytest.raises(ValueError, match="num_labels=2 and 3 labels"):
        LEDConfig(num_labels=2, id2label={0: "a", 1: "b", 2: "c"})


def test_unknown_keys_are_attributes_and_round_trip(tmp_path):
    config = LEDConfig(**TINY, transformers_version="4.46.3", finetuned_on="arxiv", task_specific_params={"x": 1})
    assert config.finetuned_on == "arxiv" and config.extra["task_specific_params"] == {"x": 1}
    config.note = "set later"
    assert config.to_dict()["note"] == "set later"
    config.save_pretrained(tmp_path)
    again = LEDConfig.from_pretrained(tmp_path)
    assert again == config and again.note == "set later" and again.transformers_version == "4.46.3"
    with pytest.raises(AttributeError, match="no setting 'missing'"):
        config.missing
    with pytest.raises(ValueError, match="not 'led'"):
        LEDConfig(model_type="bart")


def test_config_from_pretrained_overrides(tmp_path):
    LEDConfig(**TINY, note="kept").save_pretrained(tmp_path)
    config = LEDConfig.from_pretrained(tmp_path, num_labels=4, dropout=0.25, note="changed")
    assert config.num_labels == 4 and config.dropout == 0.25 and config.note == "changed"
    with pytest.raises(TypeError, match=r"\['bogus'\] is not a setting"):
        LEDConfig.from_pretrained(tmp_path, bogus=1)


def test_model_from_pretrained_overrides_like_transformers(transformers_led, hf_qa_checkpoint):
    _, path = hf_qa_checkpoint
    overrides = dict(dropout=0.0, attention_probs_dropout_prob=0.125, classifier_dropout=0.5, init_std=0.01)
    ours = LEDForQuestionAnswering.from_pretrained(path, **overrides)
    hf = transformers_led.LEDForQuestionAnswering.from_pretrained(path, **overrides)
    for name in ("dropout", "attention_dropout", "classifier_dropout", "init_std", "d_model"):
        assert getattr(ours.config, name) == getattr(hf.config, name), name
    assert ours.config.attention_dropout == 0.125 and ours.config.init_std == 0.01


def test_model_from_pretrained_rejects_unknown_keywords(hf_generation_checkpoint, transformers_led):
    _, path = hf_generation_checkpoint
    with pytest.raises(TypeError, match=r"LEDForConditionalGeneration\.from_pretrained\(\) got unexpected keyword "
                                        r"argument\(s\) \['dropuot'\]"):
        LEDForConditionalGeneration.from_pretrained(path, dropuot=0.2)
    with pytest.raises(TypeError, match="dropuot"):  # transformers rejects it too
        transformers_led.LEDForConditionalGeneration.from_pretrained(path, dropuot=0.2)


def test_model_from_pretrained_torch_dtype(hf_generation_checkpoint):
    _, path = hf_generation_checkpoint
    model = LEDForConditionalGeneration.from_pretrained(path, torch_dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_classification_labels_override_a_checkpoints_labels(tmp_path, caplog):
    """``num_labels`` as transformers 4's setter applies it (a new count gives LABEL_0..; the same count keeps the
    names); transformers 5.24 instead keeps a checkpoint's id2label of another size, with a warning."""
    from spacy_led.modeling import LEDForSequenceClassification

    torch.manual_seed(0)
    LEDForSequenceClassification(LEDConfig(**TINY, id2label={0: "a", 1: "b", 2: "c"})).save_pretrained(tmp_path)
    same = LEDForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert same.config.id2label == {0: "a", 1: "b", 2: "c"}  # same count: the checkpoint's names stay
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        more = LEDForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert more.config.id2label == {i: f"LABEL_{i}" for i in range(5)}
    assert more.classification_head.out_proj.weight.shape == (5, TINY["d_model"])
    assert "another label set" in caplog.text
