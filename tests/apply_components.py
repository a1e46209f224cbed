"""Test-only spaCy components for ``spacy-led apply --code``.

``pause_gate`` holds a document that contains ``PAUSE`` while the gate file exists, writing its process id next
to the gate first, so a test can kill a run (or one of its workers) at a moment it controls instead of racing
the run to its end. ``fail_marker`` raises on a document that contains ``FAIL``, as a model failing on one
document would."""
import os
import time
from pathlib import Path

from spacy.language import Language


class PauseGate:
    def __init__(self, gate: str):
        self.gate = Path(gate)

    def __call__(self, doc):
        if "PAUSE" in doc.text and self.gate.exists():
            self.gate.with_suffix(".pid").write_text(str(os.getpid()))
            while self.gate.exists():
                time.sleep(0.05)
        return doc


@Language.factory("pause_gate", default_config={"gate": ""})
def make_pause_gate(nlp, name, gate: str):
    return PauseGate(gate)


@Language.component("fail_marker")
def fail_marker(doc):
    if "FAIL" in doc.text:
        raise ValueError("this document says FAIL")
    return doc
