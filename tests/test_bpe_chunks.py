"""``bpe_chunks.encode_pieces`` (each distinct chunk of the texts encoded once) must give exactly the pieces and
offsets of the plain definition, ``encode_batch(texts, add_special_tokens=False)``: a cut in the wrong place (in a
run of whitespace, after a character the tokenizer does not count as non-space, before a tab or a newline)
changes the pieces of some text below."""
from __future__ import annotations

import random

import pytest

from spacy_led.bpe_chunks import encode_pieces
from spacy_led.tokenizer import LEDTokenizer

try:
    from tokenizer_fixture import CORPUS, make_tokenizer_dir
except ImportError:  # tests/ imported as a package
    from tests.tokenizer_fixture import CORPUS, make_tokenizer_dir

# Fragments around which a cut could go wrong: runs and kinds of whitespace (Python's str.isspace() counts
# \x1c-\x1f, the tokenizer's regex does not: ".\x1c" is one pre-token), contractions, digits, punctuation,
# letters outside ASCII. The tokenizer is trained on them too, so that it merges across such places.
FRAGMENTS = ["Hello", "world", "it's", "'s", "'", "don't", "42", "3.14", ".", "!", "?", ",", "(x)", "\"q\"",
             "Café", "naïve", "日本語", "東京。", "😀👍🏽", "-", "--", "a", "I", "\x1c", ".\x1c", "!\x1f", "\x85",
             "\u2028", "\u00a0", "\u3000", "\u200b", "\t", "\n", "\n\n", "\r\n", " ", "  ", "   ", "#", "~", "é"]


def _texts(seed: int, n: int) -> list:
    rng = random.Random(seed)
    return ["".join(rng.choice(FRAGMENTS) + rng.choice(["", " ", " ", "  ", "\n", "\t "])
                    for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _plain(tokenizer, texts):
    return [(e.ids, e.offsets) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def tokenizer():
    return LEDTokenizer.train([*CORPUS, *_texts(2, 300)] * 2, vocab_size=1000)


def test_pieces_and_offsets_are_the_plain_ones(tokenizer):
    texts = [*CORPUS, " ".join(CORPUS), "", " ", "  leading", "trailing  ", "a  b   c\t d\n\ne", *_texts(0, 400)]
    got = encode_pieces(tokenizer, texts)
    assert len(got) == len(texts)
    assert [(p.ids, p.offsets) for p in got] == _plain(tokenizer, texts)
    assert sum(len(p) for p in got) > 5000  # the texts are not trivially empty


def test_texts_with_special_tokens_and_prefix_space_take_the_plain_path(tokenizer, tmp_path):
    # A special token that strips the spaces after it (rstrip) takes them from the next chunk: such texts are
    # encoded whole, in their place among the others.
    directory = make_tokenizer_dir(tmp_path / "tok")
    stripping = LEDTokenizer.from_pretrained(directory)
    stripping = type(stripping)(stripping.backend_tokenizer, special_tokens={
        "mask_token": {"content": "<mask>", "lstrip": True, "rstrip": True}})
    texts = ["a <mask> b. c", "plain text, twice. plain text, twice.", "x</s> y <s>z", "<mask>  last one"]
    assert [(p.ids, p.offsets) for p in encode_pieces(stripping, texts)] == _plain(stripping, texts)
    prefixed = LEDTokenizer.from_pretrained(directory, add_prefix_space=True)
    texts = _texts(1, 50)
    assert [(p.ids, p.offsets) for p in encode_pieces(prefixed, texts)] == _plain(prefixed, texts)
