"""The core of LED's tokenizer: BART's byte-level BPE, built directly on the ``tokenizers`` library.

:class:`ByteLevelBPE` turns text into :class:`Encoding` objects (ids with character offsets, special-token
masks and sequence ids) and back; it knows nothing of transformers' calling conventions, which
``spacy_led.tokenizer.LEDTokenizer`` adds on top. The spaCy components use this core directly: they need the
offsets of every piece to map BPE pieces back to spaCy tokens.

Why not ``transformers``? The plugin must run without it (it is only a test-time reference), and
its tokenizer classes changed behaviour across major versions (in transformers 5 the LED tokenizer
is an alias of ``RobertaTokenizer``; ``LEDTokenizerFast(vocab_file=..., merges_file=...)`` silently
builds an empty tokenizer). This module reproduces what ``LEDTokenizerFast.from_pretrained(dir)``
computes, ids, offsets and special-token masks included, from the same checkpoint files.

What it reproduces (and why each piece matters):

* Byte-level BPE over GPT-2's byte alphabet: any string, including emoji and control characters,
  tokenizes without ``<unk>``; ``add_prefix_space`` defaults to False as in BART pre-training.
* Special tokens ``<s>`` (bos/cls), ``<pad>``, ``</s>`` (eos/sep), ``<unk>``, ``<mask>``.
  ``<mask>`` strips the space before it (``lstrip``), as BART's ``AddedToken(lstrip=True)``, so
  ``"a <mask> b"`` yields ``a``, ``<mask>``, ``Ġb`` as in BART's denoising pre-training.
* Layout ``<s> A </s>`` and ``<s> A </s></s> B </s>`` through ``tokenizers``' RobertaProcessing
  with ``trim_offsets=True``: offsets of pieces that start with a space do not cover that space,
  exactly as HF's ``return_offsets_mapping`` reports them. Offsets are character offsets into the
  original (pair) text; special tokens get ``(0, 0)``.

What it does differently on purpose:

* Truncation never happens silently: every encoding reports ``num_truncated`` and a warning is
  logged on the ``"spacy_led"`` logger. Without ``truncation`` nothing is cut, even past
  ``max_length``: LED's point is long inputs, and the caller decides what to do.
* The backend ``tokenizers.Tokenizer`` is never reconfigured after construction (no
  ``enable_truncation``/``enable_padding``); padding is done by the caller. That keeps one instance safe
  to share between threads and spaCy components.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

logger = logging.getLogger("spacy_led")

#: LED encoders (led-base-16384, led-large-16384) have 16384 positions. HF falls back to an
#: "infinite" 1e30 when a checkpoint's tokenizer_config.json does not say; a real number is more
#: useful for ``truncation=True`` / ``padding="max_length"`` without an explicit ``max_length``.
DEFAULT_MODEL_MAX_LENGTH = 16384

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

#: Attribute name -> BART's default content. bos/cls and eos/sep share a token.
DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}

_TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
_BYTES_FORMAT = "spacy_led.LEDTokenizer"
_BYTES_VERSION = 1


@dataclass
class Encoding:
    """One encoded text (or text pair).

    ``offsets`` are ``(start, end)`` character offsets into the text the piece came from (the pair
    text for pieces with ``sequence_ids == 1``); special tokens have ``(0, 0)``.
    ``special_tokens_mask`` is 1 for the ``<s>``/``</s>`` the template adds (and for padding in
    a padded batch); special tokens written literally in the text are single pieces with their
    special id but mask 0, as HF reports them. ``sequence_ids`` is None for template
    tokens, else 0 (first text) or 1 (pair). ``num_truncated`` counts the pieces that truncation
    removed (0 when nothing was cut).
    """

    ids: list[int]
    offsets: list[tuple[int, int]]
    special_tokens_mask: list[int]
    sequence_ids: list[int | None]
    tokens: list[str] = field(default_factory=list)
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)


class ByteLevelBPE:
    """BART/LED byte-level BPE: text to :class:`Encoding` (ids, offsets) and ids back to text.

    Usually built with :meth:`from_pretrained` (a checkpoint directory) or :meth:`from_bytes`.
    The constructor takes a ``tokenizers.Tokenizer`` with a BPE model and *owns* it: it installs
    the ByteLevel pre-tokenizer/decoder, the Roberta post-processor and the special tokens.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        add_prefix_space: bool = False,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        special_tokens: dict[str, str | dict] | None = None,
    ):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"{type(self).__name__} needs a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if not isinstance(tokenizer.model, models.BPE):
            raise ValueError(
                f"LED uses a byte-level BPE model, but the tokenizer's model is "
                f"{type(tokenizer.model).__name__}; this is not a BART/LED tokenizer"
            )
        if not isinstance(model_max_length, int) or isinstance(model_max_length, bool) or model_max_length <= 0:
            raise ValueError(f"model_max_length must be a positive int, got {model_max_length!r}")
        self._tok = tokenizer
        self.add_prefix_space = bool(add_prefix_space)
        self._model_max_length = model_max_length

        # Same pipeline HF builds for BART/LED (RobertaTokenizer in transformers 5): whatever a
        # tokenizer.json says about these parts, HF replaces them too, so ids stay identical.
        tokenizer.normalizer = None
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space, use_regex=True)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.no_truncation()
        tokenizer.no_padding()

        specs = dict(DEFAULT_SPECIAL_TOKENS)
        specs.update({k: v for k, v in (special_tokens or {}).items() if k in DEFAULT_SPECIAL_TOKENS and v})
        existing = {t.content: t for t in tokenizer.get_added_tokens_decoder().values()}
        self._special_tokens: dict[str, str] = {}
        resolved: dict[str, AddedToken] = {}
        for attr, spec in specs.items():
            token = _to_added_token(spec, attr, existing)
            if tokenizer.token_to_id(token.content) is None:
                raise ValueError(
                    f"Special token {token.content!r} ({attr}) is not in the vocabulary. An LED/BART "
                    f"vocabulary must contain <s>, <pad>, </s>, <unk> and <mask>; check that vocab.json "
                    f"belongs to an LED/BART checkpoint, or name the right token in tokenizer_config.json"
                )
            self._special_tokens[attr] = token.content
            resolved.setdefault(token.content, token)
        # Registering them (again) makes them atomic in the input and skippable in decode; for a
        # token already in the vocabulary, add_special_tokens keeps its id and updates the flags.
        tokenizer.add_special_tokens(list(resolved.values()))
        self._added_flags = {c: _added_token_to_dict(t) for c, t in resolved.items()}

        sep, cls = self._special_tokens["sep_token"], self._special_tokens["cls_token"]
        tokenizer.post_processor = processors.RobertaProcessing(
            (sep, tokenizer.token_to_id(sep)),
            (cls, tokenizer.token_to_id(cls)),
            trim_offsets=True,
            add_prefix_space=self.add_prefix_space,
        )
        self._special_ids = {tokenizer.token_to_id(c) for c in resolved}
        self._n_special_single = tokenizer.num_special_tokens_to_add(False)
        self._n_special_pair = tokenizer.num_special_tokens_to_add(True)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 8000, *, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
    ) -> "ByteLevelBPE":
        """A new BART-style byte-level BPE learnt from ``texts``, for LED models trained from scratch.

        Same id layout as BART: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, all 256 byte symbols (so no
        text is ever ``<unk>``), the learnt merges, and ``<mask>`` last."""
        vocab, merges = train_bpe_vocab(texts, vocab_size)
        backend = Tokenizer(
            models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        )
        return cls(backend, model_max_length=model_max_length)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        revision: str | None = None,
        model_max_length: int | None = None,
        add_prefix_space: bool | None = None,
    ) -> "ByteLevelBPE":
        """Load the tokenizer of a checkpoint directory (e.g. a copy of ``allenai/led-base-16384``) or of a
        hub id (``allenai/led-base-16384``, optionally ``@revision`` or ``revision=``: only the tokenizer
        files are fetched, see ``spacy_led.modeling.hub``).

        Reads ``tokenizer.json`` when present, else ``vocab.json`` + ``merges.txt``; honours
        ``tokenizer_config.json`` and ``special_tokens_map.json`` (special tokens,
        ``model_max_length``, ``add_prefix_space``) where they exist. Keyword arguments override
        the files.
        """
        from .modeling.hub import TOKENIZER, resolve_checkpoint

        directory = resolve_checkpoint(path, revision=revision, needs=(TOKENIZER,))
        if not directory.exists():
            raise FileNotFoundError(
                f"LED tokenizer directory '{directory}' does not exist. Pass the directory of an LED/BART "
                f"checkpoint (e.g. a local copy of allenai/led-base-16384) holding {TOKENIZER_FILE} or "
                f"{VOCAB_FILE} + {MERGES_FILE}."
            )
        if not directory.is_dir():
            raise ValueError(
                f"{cls.__name__}.from_pretrained expects a directory, but '{directory}' is a file. Pass the "
                f"directory that contains {TOKENIZER_FILE} or {VOCAB_FILE} + {MERGES_FILE}."
            )
        config = _read_json(directory / TOKENIZER_CONFIG_FILE) or {}
        special_map = _read_json(directory / SPECIAL_TOKENS_MAP_FILE) or {}
        if not isinstance(config, dict) or not isinstance(special_map, dict):
            raise ValueError(
                f"{TOKENIZER_CONFIG_FILE} / {SPECIAL_TOKENS_MAP_FILE} in '{directory}' must hold JSON objects"
            )

        tokenizer_file = directory / TOKENIZER_FILE
        vocab_file, merges_file = directory / VOCAB_FILE, directory / MERGES_FILE
        if tokenizer_file.is_file():
            try:
                backend = Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:  # the Rust error says what is wrong inside the file
                raise ValueError(f"Could not read '{tokenizer_file}': {err}") from err
        elif vocab_file.is_file() and merges_file.is_file():
            try:
                backend = Tokenizer(
                    models.BPE.from_file(
                        str(vocab_file),
                        str(merges_file),
                        continuing_subword_prefix="",
                        end_of_word_suffix="",
                        fuse_unk=False,
                    )
                )
            except Exception as err:
                raise ValueError(f"Could not read '{vocab_file}' / '{merges_file}': {err}") from err
        else:
            present = [n for n in (VOCAB_FILE, MERGES_FILE) if (directory / n).is_file()]
            missing = [n for n in (VOCAB_FILE, MERGES_FILE) if n not in present]
            found = f" (found only {', '.join(present)})" if present else ""
            raise FileNotFoundError(
                f"No tokenizer files in '{directory}': need {TOKENIZER_FILE}, or both {VOCAB_FILE} and "
                f"{MERGES_FILE}; missing {', '.join([TOKENIZER_FILE] + missing)}{found}. Copy the tokenizer "
                f"files of the checkpoint (e.g. allenai/led-base-16384) into this directory."
            )

        # As in HF: special_tokens_map.json wins over tokenizer_config.json for the token names.
        special_tokens = {k: config[k] for k in DEFAULT_SPECIAL_TOKENS if config.get(k)}
        special_tokens.update({k: special_map[k] for k in DEFAULT_SPECIAL_TOKENS if special_map.get(k)})
        if model_max_length is None:
            model_max_length = config.get("model_max_length")
            # HF writes int(1e30) for "no limit"; anything beyond LED's range means "not set".
            if not isinstance(model_max_length, int) or not 0 < model_max_length < 10**9:
                model_max_length = DEFAULT_MODEL_MAX_LENGTH
        if add_prefix_space is None:
            add_prefix_space = bool(config.get("add_prefix_space", False))
        return cls(
            backend,
            add_prefix_space=add_prefix_space,
            model_max_length=model_max_length,
            special_tokens=special_tokens,
        )

    # ------------------------------------------------------------ properties
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (treat as read-only)."""
        return self._tok

    @property
    def model_max_length(self) -> int:
        return self._model_max_length

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (HF's ``len(tokenizer)``)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    bos_token = property(lambda self: self._special_tokens["bos_token"])
    eos_token = property(lambda self: self._special_tokens["eos_token"])
    unk_token = property(lambda self: self._special_tokens["unk_token"])
    sep_token = property(lambda self: self._special_tokens["sep_token"])
    pad_token = property(lambda self: self._special_tokens["pad_token"])
    cls_token = property(lambda self: self._special_tokens["cls_token"])
    mask_token = property(lambda self: self._special_tokens["mask_token"])
    bos_token_id = property(lambda self: self._tok.token_to_id(self.bos_token))
    eos_token_id = property(lambda self: self._tok.token_to_id(self.eos_token))
    unk_token_id = property(lambda self: self._tok.token_to_id(self.unk_token))
    sep_token_id = property(lambda self: self._tok.token_to_id(self.sep_token))
    pad_token_id = property(lambda self: self._tok.token_to_id(self.pad_token))
    cls_token_id = property(lambda self: self._tok.token_to_id(self.cls_token))
    mask_token_id = property(lambda self: self._tok.token_to_id(self.mask_token))

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """2 for ``<s> A </s>``, 4 for ``<s> A </s></s> B </s>``."""
        return self._n_special_pair if pair else self._n_special_single

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
            f"add_prefix_space={self.add_prefix_space})"
        )

    # -------------------------------------------------------------- encoding
    def encode_with_offsets(
        self,
        text: str,
        pair: str | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str = False,
    ) -> Encoding:
        """Encode one text (or text pair) into an :class:`Encoding`.

        ``truncation`` (True / "longest_first", "only_first", "only_second") cuts to
        ``max_length`` (default ``model_max_length``), reporting what it cut in ``num_truncated``
        and a logged warning. With ``truncation=False`` nothing is cut, whatever ``max_length``.
        """
        return self.encode_batch(
            [_check_text(text, "text")],
            None if pair is None else [_check_text(pair, "pair")],
            add_special_tokens=add_special_tokens,
            max_length=max_length,
            truncation=truncation,
        )[0]

    def encode_batch(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool | str = False,
    ) -> list[Encoding]:
        """Encode many texts (or pairs) at once with ``tokenizers``' parallel ``encode_batch``."""
        texts, pairs = _check_batch(texts, pairs)
        strategy = _truncation_strategy(truncation)
        limit = self._resolve_max_length(max_length) if strategy else None
        inputs = texts if pairs is None else list(zip(texts, pairs))
        raw = self._tok.encode_batch(inputs, add_special_tokens=add_special_tokens)
        encodings: list[Encoding] = []
        cut_rows, cut_pieces, cut_first = 0, 0, None
        for i, enc in enumerate(raw):
            # Each of these reads makes a new list (the offsets already as tuples): nothing to copy again.
            encoding = Encoding(
                ids=enc.ids,
                offsets=enc.offsets,
                special_tokens_mask=enc.special_tokens_mask,
                sequence_ids=enc.sequence_ids,
                tokens=enc.tokens,
            )
            if limit is not None and len(encoding) > limit:
                encoding = self._truncate(encoding, limit, strategy, pairs is not None)
                cut_rows += 1
                cut_pieces += encoding.num_truncated
                cut_first = i if cut_first is None else cut_first
            encodings.append(encoding)
        if cut_rows:
            logger.warning(
                "Truncated %d of %d input(s) to max_length=%d (%s): %d piece(s) cut in total, "
                "first at row %d. Their ends are not seen by the model; raise max_length or split "
                "the documents if that matters.",
                cut_rows, len(raw), limit, strategy, cut_pieces, cut_first,
            )
        return encodings

    def _resolve_max_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self._model_max_length
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 0:
            raise ValueError(f"max_length must be a non-negative int or None, got {max_length!r}")
        return max_length

    @staticmethod
    def _truncate(enc: Encoding, limit: int, strategy: str, has_pair: bool) -> Encoding:
        """Cut one full encoding to ``limit`` pieces with HF's (tokenizers') strategies.

        Works on the finished encoding: the template tokens (``sequence_ids`` None) stay and the
        tail of sequence 0 and/or 1 goes. Offsets are per piece, so the result equals what
        ``tokenizers`` produces by truncating before the post-processor (checked against HF).
        """
        n1 = enc.sequence_ids.count(0)
        n2 = enc.sequence_ids.count(1)
        n_special = len(enc) - n1 - n2
        budget = limit - n_special
        if budget < 0:
            raise ValueError(
                f"max_length={limit} is smaller than the {n_special} special tokens the template adds; "
                f"use max_length >= {n_special}"
            )
        if strategy == "longest_first":
            if not has_pair:
                k1, k2 = budget, 0
            else:
                # The exact rule of tokenizers' LongestFirst (utils/truncation.rs): the shorter
                # sequence is kept whole if the longer can absorb the cut, else both get half.
                short = min(n1, n2)
                long_ = short if short > budget else max(short, budget - short)
                if short + long_ > budget:
                    short, long_ = budget // 2, budget // 2 + budget % 2
                k1, k2 = (long_, short) if n1 > n2 else (short, long_)
        elif strategy == "only_first":
            k1, k2 = budget - n2, n2
            if k1 < 1:  # as tokenizers: the truncated sequence must keep at least one piece
                raise ValueError(
                    f"truncation='only_first' cannot fit max_length={limit}: the second sequence alone has "
                    f"{n2} pieces (+{n_special} special tokens); use truncation='longest_first'"
                )
        else:  # only_second
            if not has_pair:
                raise ValueError("truncation='only_second' needs a text pair")
            k1, k2 = n1, budget - n1
            if k2 < 1:
                raise ValueError(
                    f"truncation='only_second' cannot fit max_length={limit}: the first sequence alone has "
                    f"{n1} pieces (+{n_special} special tokens); use truncation='longest_first'"
                )
        keep_counts = {None: len(enc), 0: min(k1, n1), 1: min(k2, n2)}
        seen = {None: 0, 0: 0, 1: 0}
        keep = []
        for i, sid in enumerate(enc.sequence_ids):
            if seen[sid] < keep_counts[sid]:
                keep.append(i)
            seen[sid] += 1
        return Encoding(
            ids=[enc.ids[i] for i in keep],
            offsets=[enc.offsets[i] for i in keep],
            special_tokens_mask=[enc.special_tokens_mask[i] for i in keep],
            sequence_ids=[enc.sequence_ids[i] for i in keep],
            tokens=[enc.tokens[i] for i in keep] if enc.tokens else [],
            num_truncated=len(enc) - len(keep),
        )

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The byte-level piece strings (``"Ġworld"`` style), as HF's ``tokenize``."""
        return self.encode_with_offsets(text, pair, add_special_tokens=add_special_tokens).tokens

    # -------------------------------------------------------------- decoding
    def decode(
        self,
        ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> str:
        """Turn ids (list, tuple, 1-D tensor/array or one int) back into text.

        ``clean_up_tokenization_spaces`` defaults to False, like transformers 5 (whose LED
        tokenizer also ignores True for BPE). Here True applies the classic clean-up
        (``" ." -> "."``, ``" 's" -> "'s"``, ...) that transformers 4 applied, for
        reproducing numbers computed with it.
        """
        text = self._tok.decode(_as_id_list(ids, "ids"), skip_special_tokens=skip_special_tokens)
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self,
        sequences: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool = False,
    ) -> list[str]:
        """Decode many sequences (list of id lists, list of tensors, or a 2-D tensor/array)."""
        if hasattr(sequences, "tolist") and not isinstance(sequences, (list, tuple)):
            sequences = sequences.tolist()
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(
                f"batch_decode expects a list of id sequences or a 2-D tensor, got {type(sequences).__name__}"
            )
        rows = [_as_id_list(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
        texts = self._tok.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return [_clean_up_tokenization(t) for t in texts] if clean_up_tokenization_spaces else texts

    # ------------------------------------------------------- token <-> id maps
    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Piece string(s) to id(s); unknown pieces map to ``unk_token_id`` as in HF."""
        if isinstance(tokens, str):
            token_id = self._tok.token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(_check_text(t, "token")) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """Id(s) to piece string(s). Unlike HF (which returns None), an unknown id raises."""
        single = isinstance(ids, int) or (hasattr(ids, "ndim") and getattr(ids, "ndim") == 0)
        id_list = _as_id_list(ids, "ids")
        tokens = []
        for i in id_list:
            if skip_special_tokens and i in self._special_ids:
                continue
            token = self._tok.id_to_token(i)
            if token is None:
                raise ValueError(f"id {i} is not in the vocabulary (size {self.vocab_size})")
            tokens.append(token)
        return tokens[0] if single and tokens else tokens

    # ---------------------------------------------------------- serialization
    def _config(self) -> dict[str, Any]:
        """What, besides tokenizer.json, is needed to rebuild this tokenizer (JSON-able)."""
        specials: dict[str, Any] = {}
        for attr, content in self._special_tokens.items():
            flags = self._added_flags[content]
            # Plain strings where the flags are the defaults, so HF reads the files like its own.
            default = {"lstrip": False, "rstrip": False, "single_word": False, "normalized": False}
            specials[attr] = content if all(flags[k] == v for k, v in default.items()) else dict(flags)
        return {
            "add_prefix_space": self.add_prefix_space,
            "model_max_length": self._model_max_length,
            "special_tokens": specials,
        }

    def save_pretrained(self, path: str | os.PathLike) -> tuple[str, ...]:
        """Write a checkpoint-style tokenizer directory; return the written file paths.

        ``vocab.json`` + ``merges.txt`` (BART's slow layout), ``tokenizer.json`` (fast layout),
        ``tokenizer_config.json`` and ``special_tokens_map.json``. Both this class and
        transformers' ``LEDTokenizerFast.from_pretrained`` load the directory with identical ids.
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        written = list(self.save_vocabulary(directory))
        tokenizer_file = directory / TOKENIZER_FILE
        self._tok.save(str(tokenizer_file))
        config = self._config()
        specials = {k: (dict(v, __type="AddedToken") if isinstance(v, dict) else v)
                    for k, v in config["special_tokens"].items()}
        tokenizer_config = {
            "tokenizer_class": "LEDTokenizer",
            "model_max_length": config["model_max_length"],
            "add_prefix_space": config["add_prefix_space"],
            "trim_offsets": True,
            "errors": "replace",
            "clean_up_tokenization_spaces": False,
            **specials,
        }
        _write_json(directory / TOKENIZER_CONFIG_FILE, tokenizer_config)
        _write_json(directory / SPECIAL_TOKENS_MAP_FILE, config["special_tokens"])
        written += [str(tokenizer_file), str(directory / TOKENIZER_CONFIG_FILE)]
        written.append(str(directory / SPECIAL_TOKENS_MAP_FILE))
        return tuple(written)

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write ``vocab.json`` and ``merges.txt`` (``#version: 0.2`` header) into ``save_directory``, named
        ``{filename_prefix}-vocab.json`` etc. when a prefix is given, as transformers names them.

        ``vocab.json`` includes added tokens (as BART's does with ``<mask>``), so the two files
        alone rebuild every id.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        model = json.loads(self._tok.to_str())["model"]
        vocab = dict(model["vocab"])
        for token_id, token in self._tok.get_added_tokens_decoder().items():
            vocab.setdefault(token.content, token_id)
        vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        vocab_file, merges_file = directory / (prefix + VOCAB_FILE), directory / (prefix + MERGES_FILE)
        _write_json(vocab_file, vocab)
        merges_file.write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
        return str(vocab_file), str(merges_file)

    def to_bytes(self) -> bytes:
        """Serialize (tokenizer.json content + config) for storage inside spaCy pipelines."""
        payload = {
            "format": _BYTES_FORMAT,
            "version": _BYTES_VERSION,
            "config": self._config(),
            "tokenizer": self._tok.to_str(),
        }
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "ByteLevelBPE":
        """Inverse of :meth:`to_bytes`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes expects bytes, got {type(data).__name__}")
        try:
            payload = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"Not a serialized LEDTokenizer: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != _BYTES_FORMAT:
            raise ValueError("Not a serialized LEDTokenizer (missing format marker)")
        if payload.get("version") != _BYTES_VERSION:
            raise ValueError(f"Unsupported LEDTokenizer serialization version {payload.get('version')!r}")
        config = payload["config"]
        return cls(
            Tokenizer.from_str(payload["tokenizer"]),
            add_prefix_space=config["add_prefix_space"],
            model_max_length=config["model_max_length"],
            special_tokens=config["special_tokens"],
        )


# ---------------------------------------------------------------------- helpers
def train_bpe_vocab(texts: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a byte-level BPE in BART's id layout; return ``(vocab, merges)`` (``vocab_size`` counts all ids)."""
    from tokenizers import trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    minimum = len(specials) + 256 + 1
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (4 special tokens, 256 bytes and <mask>); got {vocab_size}.")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # <mask> is appended last, as in BART
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    if [vocab[t] for t in specials] != list(range(len(specials))):  # pragma: no cover - trainer contract
        raise RuntimeError("the BPE trainer did not put the special tokens first")
    vocab["<mask>"] = len(vocab)
    raw_merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in raw_merges]
    return vocab, merges


def _to_added_token(spec: str | dict, attr: str, existing: dict[str, AddedToken]) -> AddedToken:
    """Special-token spec -> AddedToken. Flags: explicit dict > the file's added token > BART default."""
    if isinstance(spec, dict):
        content = spec.get("content")
        if not isinstance(content, str) or not content:
            raise ValueError(f"{attr} must be a string or a dict with a 'content' string, got {spec!r}")
        flags = {k: bool(spec.get(k, False)) for k in ("lstrip", "rstrip", "single_word")}
        flags["normalized"] = bool(spec.get("normalized", False))
    elif isinstance(spec, str):
        content = spec
        if content in existing:
            tok = existing[content]
            flags = {"lstrip": tok.lstrip, "rstrip": tok.rstrip, "single_word": tok.single_word,
                     "normalized": tok.normalized}
        else:
            flags = {"lstrip": attr == "mask_token", "rstrip": False, "single_word": False, "normalized": False}
    else:
        raise ValueError(f"{attr} must be a string or a dict with a 'content' string, got {type(spec).__name__}")
    return AddedToken(content, special=True, **flags)


def _added_token_to_dict(token: AddedToken) -> dict[str, Any]:
    return {
        "content": token.content,
        "lstrip": token.lstrip,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
        "normalized": token.normalized,
        "special": True,
    }


def _check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _check_batch(texts: Any, pairs: Any) -> tuple[list[str], list[str] | None]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    texts = [_check_text(t, f"texts[{i}]") for i, t in enumerate(texts)]
    if pairs is None:
        return texts, None
    if isinstance(pairs, str) or not isinstance(pairs, (list, tuple)):
        raise TypeError(f"pairs must be a list of str or None, got {type(pairs).__name__}")
    if len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs; they must match one to one")
    return texts, [_check_text(t, f"pairs[{i}]") for i, t in enumerate(pairs)]


def _truncation_strategy(truncation: Any) -> str | None:
    if truncation is None or truncation is False or truncation == "do_not_truncate":
        return None
    if truncation is True:
        return "longest_first"
    if isinstance(truncation, str) and truncation in _TRUNCATION_STRATEGIES:
        return truncation
    raise ValueError(
        f"truncation must be False/'do_not_truncate', True/'longest_first', 'only_first' or "
        f"'only_second', got {truncation!r}"
    )


def _as_id_list(ids: Any, name: str) -> list[int]:
    """Ids from an int, list/tuple, torch tensor or numpy array -> list of non-negative ints."""
    if hasattr(ids, "tolist") and not isinstance(ids, (list, tuple)):
        ids = ids.tolist()  # tensors and arrays; a 0-d one becomes a plain int
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = [ids]
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints or a 1-D tensor, got {type(ids).__name__}")
    out = []
    for i in ids:
        if hasattr(i, "item") and not isinstance(i, (list, tuple)):
            i = i.item()
        if not isinstance(i, int) or isinstance(i, bool):
            hint = " (for a batch use batch_decode)" if isinstance(i, (list, tuple)) else ""
            raise TypeError(f"{name} must contain ints, got {type(i).__name__}{hint}")
        if i < 0:
            raise ValueError(
                f"{name} contains the negative id {i}; labels use -100 for ignored positions, "
                f"replace them with pad_token_id before decoding"
            )
        out.append(i)
    return out


def _clean_up_tokenization(text: str) -> str:
    """transformers' classic ``clean_up_tokenization`` (applied by transformers 4 when asked)."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}") from err


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
