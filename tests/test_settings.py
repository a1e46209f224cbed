"""The components' settings (spacy_led/pipes/settings.py) are their config arguments, checked and filled by
spaCy, and their cfg; no model is needed."""
from dataclasses import asdict, fields

import pytest
import spacy
from thinc.api import ConfigValidationError

from spacy_led.pipes.settings import ClassifierSettings, QASettings, SummarizerSettings


@pytest.mark.parametrize("factory, settings", [("led_summarizer", SummarizerSettings),
                                               ("led_classifier", ClassifierSettings), ("led_qa", QASettings)])
def test_every_setting_is_a_config_argument_with_its_default_and_the_cfg(factory, settings):
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config={"batch_token_budget": 999})
    config = nlp.config["components"][factory]
    expected = asdict(settings(batch_token_budget=999))
    assert {f.name: config[f.name] for f in fields(settings)} == expected
    assert pipe.cfg == expected
    assert config["checkpoint"] is None and {"model", "global_attention", "scorer"} <= set(config)


def test_spacy_checks_types_and_names_and_the_settings_check_values():
    nlp = spacy.blank("en")
    with pytest.raises(ConfigValidationError, match="num_beams"):
        nlp.add_pipe("led_summarizer", config={"num_beams": "four"})
    with pytest.raises(ConfigValidationError, match="unexpected argument: 'beams'"):
        nlp.add_pipe("led_summarizer", config={"beams": 4})
    with pytest.raises(ValueError, match="overflow='wrap' is not one of"):
        nlp.add_pipe("led_summarizer", config={"overflow": "wrap"})
    with pytest.raises(ValueError, match="max_answer_length must be at least 1"):
        nlp.add_pipe("led_qa", config={"max_answer_length": 0})
    with pytest.raises(ValueError, match="batch_token_budget must be positive"):
        nlp.add_pipe("led_classifier", config={"batch_token_budget": 0})


def test_lists_are_not_shared_between_components():
    nlp = spacy.blank("en")
    first = nlp.add_pipe("led_classifier", name="first")
    second = nlp.add_pipe("led_classifier", name="second")
    first.add_label("a")
    assert second.labels == () and ClassifierSettings().labels == []
