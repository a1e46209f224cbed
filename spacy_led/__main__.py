"""``python -m spacy_led apply ...``: the ``spacy-led`` command line."""
from .cli import run

if __name__ == "__main__":
    run()
