"""An ``OnnxLED`` in the shape of the torch LED the components call (``runtime = "onnx"``): calling it gives the
QA or classification output fields, ``generate`` gives ``generate``'s output, with the settings and generation
defaults of the torch model the component holds (whose weights the export must have been made from)."""
from __future__ import annotations

from typing import Any

import torch

from ..modeling.outputs import Seq2SeqQuestionAnsweringOutput, Seq2SeqSequenceClassifierOutput
from .runtime import OnnxExportError, OnnxLED

_MODULE_TASKS = {"LEDForConditionalGeneration": "generation", "LEDForSequenceClassification": "classification",
                 "LEDForQuestionAnswering": "question_answering"}


class OnnxModule:
    device = torch.device("cpu")

    def __init__(self, path: str, module: torch.nn.Module, what: str):
        self.runtime = OnnxLED(path)
        task = _MODULE_TASKS.get(type(module).__name__)
        if self.runtime.task != task:
            raise OnnxExportError(f"the ONNX export {path} is a {self.runtime.task} model but {what} needs a "
                                  f"{task} model: point onnx_path at this component's own export.")
        self.runtime.check_matches(module, what)
        # The component's own settings win over the copies written with the export.
        self.runtime.config = module.config
        self.runtime.generation_config = getattr(module, "generation_config", self.runtime.generation_config)
        self.config = module.config

    def __call__(self, input_ids, attention_mask=None, global_attention_mask=None, **_: Any):
        runtime = self.runtime
        if runtime.task == "classification":
            logits = runtime.classify(input_ids, attention_mask, global_attention_mask)
            return Seq2SeqSequenceClassifierOutput(logits=torch.from_numpy(logits))
        start, end = runtime.question_answering(input_ids, attention_mask, global_attention_mask)
        return Seq2SeqQuestionAnsweringOutput(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))

    def generate(self, input_ids, attention_mask=None, global_attention_mask=None, **kwargs: Any):
        return self.runtime.generate(input_ids, attention_mask, global_attention_mask, **kwargs)
