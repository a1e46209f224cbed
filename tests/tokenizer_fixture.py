"""A tiny BART-style byte-level BPE tokenizer for tests, trained on the fly.

Real LED checkpoints (``allenai/led-base-16384``) cannot be downloaded in the test environment, so
tests build a miniature tokenizer with the *same layout and conventions*: ``vocab.json`` +
``merges.txt``, ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3 at the front of the vocabulary and
``<mask>`` as the very last id (BART's 50264). Every one of the 256 byte symbols is in the vocabulary,
so any text (accents, CJK, emoji, odd whitespace) tokenizes without ``<unk>``, exactly like BART.

Plain functions, no pytest import, so any test module can use them::

    from tokenizer_fixture import make_tokenizer_dir
    path = make_tokenizer_dir(tmp_path / "tok")

Training takes a few milliseconds; the result is deterministic for a given ``vocab_size``.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]
MASK_TOKEN = "<mask>"

# Multilingual training text: enough repetition that common words become single pieces (so tests
# exercise real merges), plus accents, CJK, emoji and odd whitespace so those bytes get merged too.
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Longformer encoder-decoder models summarize long documents with sparse attention.",
    "The model reads the whole document, then the decoder writes a short summary.",
    "Hello, how are you? I'm fine, thanks. It's a nice day, isn't it?",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 16384 3.14159 -42 1,024",
    "Café crème brûlée, naïve façade, déjà vu, Zürich, São Paulo, Ångström, El Niño.",
    "Übergrößenträger äußern sich über Straßenbahnen in München.",
    "日本語のテキストを分割します。東京は日本の首都です。",
    "中文文本处理很有趣。我们喜欢自然语言处理。",
    "한국어 문장도 포함합니다. 안녕하세요 세계.",
    "Здравствуй, мир! Это пример текста на русском языке.",
    "مرحبا بالعالم. هذا نص عربي قصير.",
    "Emoji time 😀😃😄 👍🏽 🇩🇪 👨‍👩‍👧‍👦 ❤️ ✨ 🚀",
    "Tabs\tand  double  spaces\nand new lines\n\nand\r\nwindows line ends.",
    "   leading spaces and trailing spaces   ",
    "non\u00a0breaking\u00a0spaces and a zero\u200bwidth space and ideographic\u3000space",
    "Special looking text: <s> </s> <pad> <mask> <unk> should be handled.",
    "Code: def f(x): return x ** 2  # comment; url https://example.com/a?b=c&d=e",
]


def train_bpe(vocab_size: int = 500) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the byte-level BPE on ``CORPUS`` and return ``(vocab, merges)`` in BART's id layout.

    ``vocab_size`` counts everything, ``<mask>`` included; it must leave room for the 4 leading
    special tokens, the 256 byte symbols and ``<mask>``.
    """
    from spacy_led.bpe import train_bpe_vocab

    return train_bpe_vocab(CORPUS * 3, vocab_size)


def make_tokenizer_dir(path, vocab_size: int = 500) -> Path:
    """Write ``vocab.json`` + ``merges.txt`` into ``path`` (created if needed); return the path.

    The same two files, in the same format (``#version: 0.2`` header, one merge per line), as the
    ``allenai/led-base-16384`` repository, so loaders are tested on the real layout.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe(vocab_size)
    ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    (path / "vocab.json").write_text(json.dumps(ordered, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (path / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_tokenizer_json_dir(path, vocab_size: int = 500) -> Path:
    """Write only a ``tokenizer.json`` (BART's fast-tokenizer layout) into ``path``; return the path.

    Built with the ``tokenizers`` library the way HF's BART converter does: BPE model, ByteLevel
    pre-tokenizer and decoder, RobertaProcessing post-processor with ``trim_offsets``, the five
    special tokens registered as special added tokens, ``<mask>`` with ``lstrip=True``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe(vocab_size)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), trim_offsets=True, add_prefix_space=False
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
        + [AddedToken(MASK_TOKEN, lstrip=True, special=True, normalized=False)]
    )
    tok.save(str(path / "tokenizer.json"))
    return path


def jsonable(value):
    """Tensors, arrays, tuples and dict-like batches as plain JSON values (lists, dicts), so the outputs of two
    tokenizers, or one and a stored reference, compare with ``==``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "keys"):  # dict, BatchEncoding (a UserDict in transformers 4)
        return {k: jsonable(value[k]) for k in value.keys()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
