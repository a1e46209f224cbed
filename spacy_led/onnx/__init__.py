"""LED as ONNX graphs for onnxruntime (the optional extra ``spacy-led[onnx]``).

``export.py`` writes the graphs (``graphs.py``; the encoder attention in its export-friendly form in
``attention.py``), ``runtime.py`` runs them: ``OnnxLED(path).generate(...)`` gives the ids
``LEDForConditionalGeneration.generate`` gives. Importing this package needs neither onnx nor onnxruntime.
"""
from .export import export_module, export_onnx
from .runtime import OnnxExportError, OnnxLED

__all__ = ["export_onnx", "export_module", "OnnxLED", "OnnxExportError"]
