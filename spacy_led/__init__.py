"""spacy-led: the Longformer-Encoder-Decoder (LED) for spaCy, implemented from scratch in PyTorch.

This module stays cheap to import (spaCy imports every installed factory on every ``spacy.blank()``): the
model lives in ``spacy_led.modeling`` and is imported only when used.
"""
__version__ = "0.1.0"
