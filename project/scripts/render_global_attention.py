"""Render where a component's global attention goes, as a PNG: displaCy's span style in headless Chromium.

A component with ``global_attention_spans_key`` set stores the Doc tokens its strategy gave global attention
as a span group; ``displacy.render(doc, style="span", options={"spans_key": ...})`` draws that group as HTML,
and Chromium takes the screenshot. Which tokens are global depends on the strategy and the Doc alone, not on
the weights, so a freshly initialized tiny summarizer (tokenizer learnt from the text itself) serves: the
picture is the same for a trained one.

Needs Chromium (Debian: ``apt-get install chromium``; or ``--browser PATH``).

Usage: python scripts/render_global_attention.py sample/dev.jsonl images/global_attention.png \\
           [--document dev-0000] [--characters 1200] [--strategy spacy_led.sentence_starts.v1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import spacy
from spacy import displacy
from spacy.training import Example

from spacy_led.extensions import ensure_extensions

SPANS_KEY = "led_global"
TINY_MODEL = {"@architectures": "spacy_led.LED.v1", "task": "generation", "d_model": 32, "encoder_layers": 1,
              "decoder_layers": 1, "attention_heads": 2, "ffn_dim": 64, "attention_window": 32,
              "max_encoder_position_embeddings": 1024, "max_decoder_position_embeddings": 32}


def excerpt(path: Path, document: str | None, characters: int) -> str:
    """The beginning of a document of ``path`` (the first, or the one with id ``document``), cut at the last
    paragraph break before ``characters``."""
    with open(path, encoding="utf8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    record = next((r for r in records if document in (None, r["id"])), None)
    if record is None:
        sys.exit(f"{path} has no document with id {document!r}.")
    text = record["text"]
    if len(text) <= characters:
        return text
    cut = text.rfind("\n\n", 0, characters)
    return text[: cut if cut > 0 else characters]


def annotated_doc(text: str, strategy: str):
    """``text`` through a summarizer that stores its global-attention tokens in ``doc.spans[SPANS_KEY]``."""
    ensure_extensions()
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("led_summarizer", config={"model": TINY_MODEL, "global_attention": {"@misc": strategy},
                                           "global_attention_spans_key": SPANS_KEY, "max_summary_length": 4})
    reference = nlp.make_doc(text)
    reference._.summary = text.split("\n", 1)[0]
    nlp.initialize(lambda: [Example(nlp.make_doc(text), reference)])
    return nlp(text)


def screenshot(html: str, output: Path, browser: str, width: int, height: int) -> None:
    """Chromium, headless and offline (no network services, a throw-away profile), screenshots ``html``."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html, encoding="utf8")
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={width},{height}",
                   f"--screenshot={output.resolve()}", page.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not output.exists():
            sys.exit(f"{browser} failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("documents", type=Path, help="JSONL documents (the project's sample format)")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--document", help="id of the document to show (default: the first)")
    parser.add_argument("--characters", type=int, default=1200, help="show about this much of its beginning")
    parser.add_argument("--strategy", default="spacy_led.sentence_starts.v1", help="a registered strategy")
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--width", type=int, default=1000, help="window width in pixels")
    parser.add_argument("--height", type=int, default=680, help="window height in pixels")
    args = parser.parse_args()
    doc = annotated_doc(excerpt(args.documents, args.document, args.characters), args.strategy)
    html = displacy.render(doc, style="span", page=True,
                           options={"spans_key": SPANS_KEY, "colors": {"GLOBAL": "#ffcc66"}})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    screenshot(html, args.output, args.browser, args.width, args.height)
    print(f"{len(doc.spans[SPANS_KEY])} global-attention spans ({args.strategy}, <s> global: "
          f"{doc.spans[SPANS_KEY].attrs['bos']}) drawn to {args.output}")


if __name__ == "__main__":
    main()
