"""A from-scratch PyTorch LED (Longformer-Encoder-Decoder) with transformers' names and numbers.

No spaCy or Thinc here: this package is usable on its own, like ``transformers`` is.
"""
from .config import LEDConfig
from .generation_config import GenerationConfig
from .model import (
    DecoderCache,
    LEDForConditionalGeneration,
    LEDForQuestionAnswering,
    LEDForSequenceClassification,
    LEDModel,
    shift_tokens_right,
)

__all__ = [
    "LEDConfig",
    "GenerationConfig",
    "LEDModel",
    "LEDForConditionalGeneration",
    "LEDForSequenceClassification",
    "LEDForQuestionAnswering",
    "DecoderCache",
    "shift_tokens_right",
]
