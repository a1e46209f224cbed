"""LEDTokenizer: transformers' tokenizer API for LED on top of the byte-level BPE core (``spacy_led.bpe``).

What the LED documentation shows works as it does with transformers' ``LEDTokenizer`` / ``LEDTokenizerFast``
(checked against transformers 4.46.3 and 5.x): ``tokenizer(text)`` gives flat lists for one text and a batch for
a list of texts, ``return_tensors="pt"`` gives ``(batch, length)`` tensors, pairs, ``text_target`` labels,
padding (right or left, to the longest row, to ``max_length``, to a multiple), truncation strategies,
``return_offsets_mapping`` / ``return_special_tokens_mask`` / ``return_token_type_ids`` / ``return_length``,
``encode``, ``pad`` (which pads a ``global_attention_mask`` with -1 as LED's tokenizers do),
``build_inputs_with_special_tokens``, ``get_special_tokens_mask``, ``create_token_type_ids_from_sequences``,
``save_vocabulary``, ``decode`` / ``batch_decode`` and the token/id conversions.

Deliberate differences: truncation is reported (``BatchEncoding.num_truncated`` and a logged warning) instead of
silent; ``convert_ids_to_tokens`` raises on an id outside the vocabulary instead of returning None;
overflowing windows (``return_overflowing_tokens``/``stride``) and pre-split words are not offered (the spaCy
components cut long documents into windows themselves), and asking for them is an error.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .bpe import ByteLevelBPE, Encoding, _as_id_list, _check_text

__all__ = ["BatchEncoding", "Encoding", "LEDTokenizer"]

_TENSOR_TYPES = ("pt", "np")


class BatchEncoding(dict):
    """transformers' ``BatchEncoding``: a dict of model inputs, readable as attributes (``batch.input_ids``),
    movable with ``.to(device)``, with the core :class:`Encoding` of each row (offsets, sequence ids, what
    truncation cut) behind it."""

    def __init__(self, data: dict[str, Any], encodings: list[Encoding] | None = None):
        super().__init__(data)
        self._encodings = encodings

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r} (keys: {sorted(self)})") from None

    @property
    def encodings(self) -> list[Encoding] | None:
        """One :class:`Encoding` per row (None for the output of :meth:`LEDTokenizer.pad`)."""
        return self._encodings

    @property
    def num_truncated(self) -> list[int]:
        """How many pieces truncation removed from each row (0 where nothing was cut)."""
        return [e.num_truncated for e in self._encodings or []]

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """None for template tokens, 0 for pieces of the text, 1 for pieces of the pair (unpadded)."""
        return list(self._encodings[batch_index].sequence_ids)

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The piece strings of one row (unpadded)."""
        return list(self._encodings[batch_index].tokens)

    def to(self, device: Any) -> "BatchEncoding":
        """Move every tensor to ``device`` (in place, as transformers does); returns the batch."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


class LEDTokenizer(ByteLevelBPE):
    """LED's tokenizer with transformers' calling conventions (see the module docstring)."""

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    # ------------------------------------------------------------------ encoding
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        text_pair: str | Sequence[str] | None = None,
        text_target: str | Sequence[str] | None = None,
        text_pair_target: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Encode one text (flat lists) or a list of texts (a batch), optionally with pairs and targets.

        As transformers: ``padding`` False (default) / True or "longest" / "max_length" (``max_length``, else
        ``model_max_length``); ``truncation`` False / True or "longest_first" / "only_first" / "only_second" to
        ``max_length``; an empty ``text_pair`` next to a single text means no pair. ``text_target`` adds
        ``labels`` (its ``input_ids``, padded with the pad id). Only ``input_ids`` and ``attention_mask`` are
        returned unless more is asked for, so ``model(**tokenizer(text, return_tensors="pt"))`` works.
        ``verbose`` is accepted for compatibility; truncation is reported on the ``"spacy_led"`` logger.
        """
        if stride or return_overflowing_tokens:
            raise ValueError(
                "LEDTokenizer does not return overflowing windows (stride/return_overflowing_tokens): LED reads "
                "16k tokens at once; cut longer documents into windows before tokenizing, as the spaCy components do."
            )
        if is_split_into_words:
            raise ValueError(
                "LEDTokenizer does not take pre-split words (is_split_into_words=True): join the words with spaces "
                "and use return_offsets_mapping to map pieces back to them."
            )
        if text is None and text_target is None:
            raise ValueError("give `text` to encode inputs, `text_target` to encode labels, or both.")
        options = dict(
            add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side, return_tensors=return_tensors,
            return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
            return_special_tokens_mask=return_special_tokens_mask, return_offsets_mapping=return_offsets_mapping,
            return_length=return_length,
        )
        inputs = None if text is None else self._encode(text, text_pair, **options)
        if text_target is None:
            return inputs
        targets = self._encode(text_target, text_pair_target, **options)
        if inputs is None:
            return targets
        inputs["labels"] = targets["input_ids"]
        return inputs

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """The ids of one text (or pair) as a list (a ``(1, n)`` tensor with ``return_tensors``), as transformers'
        ``encode``. :meth:`encode_with_offsets` gives the offsets too."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one text (a str), got {type(text).__name__}; for a batch call the tokenizer")
        return self(
            text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
            max_length=max_length, return_tensors=return_tensors, **kwargs,
        )["input_ids"]

    def encode_plus(self, text: str, text_pair: str | None = None, **kwargs: Any) -> BatchEncoding:
        """transformers' older name for calling the tokenizer on one text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_plus takes one text (a str), got {type(text).__name__}; use batch_encode_plus")
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence[Any], **kwargs: Any) -> BatchEncoding:
        """transformers' older name for calling the tokenizer on a batch of texts or of ``(text, pair)`` tuples."""
        if isinstance(batch_text_or_text_pairs, str) or not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError("batch_encode_plus takes a list of texts or of (text, pair) tuples")
        rows = list(batch_text_or_text_pairs)
        if rows and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in rows):
            return self([r[0] for r in rows], [r[1] for r in rows], **kwargs)
        return self(rows, **kwargs)

    def _encode(
        self,
        text: str | Sequence[str],
        pair: str | Sequence[str] | None,
        *,
        add_special_tokens: bool,
        padding: bool | str,
        truncation: bool | str | None,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        return_tensors: str | None,
        return_token_type_ids: bool | None,
        return_attention_mask: bool | None,
        return_special_tokens_mask: bool,
        return_offsets_mapping: bool,
        return_length: bool,
    ) -> BatchEncoding:
        single = isinstance(text, str)
        if single:
            if pair is not None and not isinstance(pair, str):
                raise TypeError(f"text is one str, so text_pair must be a str or None, got {type(pair).__name__}")
            texts, pairs = [text], ([pair] if pair else None)  # transformers: an empty pair is no pair
        else:
            if isinstance(pair, str):
                raise TypeError("text_pair is a str but text is a batch; pass a list of pair texts")
            texts, pairs = text, pair
        if truncation is None and max_length is not None and padding is False:
            truncation = "longest_first"  # transformers' rule: a max_length without padding means truncation
        encodings = self.encode_batch(
            texts, pairs, add_special_tokens=add_special_tokens, max_length=max_length, truncation=truncation
        )
        rows: dict[str, list] = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            rows["token_type_ids"] = [[0] * len(e) for e in encodings]
        if return_attention_mask is not False:
            rows["attention_mask"] = [[1] * len(e) for e in encodings]
        if return_special_tokens_mask:
            rows["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            rows["offset_mapping"] = [e.offsets for e in encodings]
        target = self._padding_target([len(e) for e in encodings], padding, max_length, pad_to_multiple_of)
        rows = {key: [self._pad_row(key, row, target, padding_side) for row in values] for key, values in rows.items()}
        if return_length:
            rows["length"] = [len(row) for row in rows["input_ids"]]
        if single and return_tensors is None:
            rows = {key: (values[0] if key != "length" else values) for key, values in rows.items()}
        return BatchEncoding(_to_tensors(rows, return_tensors), encodings)

    # ------------------------------------------------------------------ padding
    def pad(
        self,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad encoded inputs (one, a batch as a dict of lists, or a list of dicts) as transformers' LED
        tokenizers do: ids with the pad id, ``attention_mask`` with 0 (created if absent), ``special_tokens_mask``
        with 1, ``token_type_ids`` with 0, ``offset_mapping`` with ``(0, 0)`` and ``global_attention_mask`` with
        -1 (any value there is ignored where ``attention_mask`` is 0), on the same side as the ids. Other keys
        (``labels``) are left as they are. ``verbose`` is accepted for compatibility; nothing is printed."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            keys = list(encoded_inputs[0])
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in keys}
        if not isinstance(encoded_inputs, dict) or "input_ids" not in encoded_inputs:
            raise ValueError(
                "pad expects the output of the tokenizer (a dict with input_ids), or a list of such dicts; got "
                f"{type(encoded_inputs).__name__}"
            )
        data = {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in encoded_inputs.items()}
        ids = data["input_ids"]
        single = not ids or not isinstance(ids[0], (list, tuple))
        if single:
            data = {key: [value] for key, value in data.items()}
        lengths = [len(row) for row in data["input_ids"]]
        if return_attention_mask is not False and "attention_mask" not in data:
            data["attention_mask"] = [[1] * n for n in lengths]
        target = self._padding_target(lengths, padding, max_length, pad_to_multiple_of)
        for key in _PAD_VALUES:
            if key in data:
                rows = data[key]
                if len(rows) != len(lengths):
                    raise ValueError(f"pad got {len(lengths)} rows of input_ids but {len(rows)} of {key}")
                data[key] = [self._pad_row(key, row, max(target or 0, n), padding_side) for row, n in zip(rows, lengths)]
        if single:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(_to_tensors(data, return_tensors))

    def _padding_target(
        self, lengths: list[int], padding: bool | str, max_length: int | None, pad_to_multiple_of: int | None
    ) -> int | None:
        """The padded length (None: no padding), with transformers' rules: rows longer than a ``max_length``
        target are left as they are (cut them with ``truncation``)."""
        if pad_to_multiple_of is not None and (
            not isinstance(pad_to_multiple_of, int) or isinstance(pad_to_multiple_of, bool) or pad_to_multiple_of <= 0
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        if padding is True or padding == "longest":
            target = max(lengths, default=0)
        elif padding == "max_length":
            target = self._resolve_max_length(max_length)
        elif padding is False or padding is None or padding == "do_not_pad":
            return None
        else:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if pad_to_multiple_of:
            target = int(math.ceil(target / pad_to_multiple_of) * pad_to_multiple_of)
        return target

    def _pad_row(self, key: str, row: Sequence, target: int | None, padding_side: str | None) -> list:
        """``row`` padded to ``target`` on ``padding_side`` with the pad value of ``key``; never cut."""
        side = padding_side or self.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")
        missing = 0 if target is None else target - len(row)
        if missing <= 0:
            return list(row)
        fill = [self.pad_token_id if key == "input_ids" else _PAD_VALUES[key]] * missing
        return list(row) + fill if side == "right" else fill + list(row)

    # ------------------------------------------------------- special tokens
    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens in transformers' order (bos, eos, unk, sep, pad, cls, mask; each once)."""
        return list(dict.fromkeys(self._special_tokens.values()))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(token) for token in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return dict(self._special_tokens)

    def build_inputs_with_special_tokens(
        self, token_ids_0: Sequence[int], token_ids_1: Sequence[int] | None = None
    ) -> list[int]:
        """``<s> A </s>`` or ``<s> A </s></s> B </s>`` from raw ids."""
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        out = cls + _as_id_list(token_ids_0, "token_ids_0") + sep
        if token_ids_1 is not None:
            out += sep + _as_id_list(token_ids_1, "token_ids_1") + sep
        return out

    def get_special_tokens_mask(
        self,
        token_ids_0: Sequence[int],
        token_ids_1: Sequence[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where a special token is (or would be added by the template), else 0.

        With ``already_has_special_tokens`` the ids are checked against the special ids, as transformers does
        for data collators; otherwise the mask is that of ``<s> A </s>`` / ``<s> A </s></s> B </s>`` built
        from raw ids (transformers' ``LEDTokenizer``; its fast tokenizer only takes the first form).
        """
        ids0 = _as_id_list(token_ids_0, "token_ids_0")
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in ids0]
        mask = [1] + [0] * len(ids0) + [1]
        if token_ids_1 is not None:
            mask += [1] + [0] * len(_as_id_list(token_ids_1, "token_ids_1")) + [1]
        return mask

    def create_token_type_ids_from_sequences(
        self, token_ids_0: Sequence[int], token_ids_1: Sequence[int] | None = None
    ) -> list[int]:
        """Zeros the length of ``<s> A </s>`` / ``<s> A </s></s> B </s>``: LED uses no token types."""
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Byte-level piece strings (``"Ġworld"``) back to text."""
        return self.backend_tokenizer.decoder.decode([_check_text(t, "token") for t in tokens])


# Padding values of the keys transformers' LED tokenizers pad (input_ids take the tokenizer's pad id).
_PAD_VALUES = {"input_ids": None, "token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1,
               "offset_mapping": (0, 0), "global_attention_mask": -1}


def _to_tensors(data: dict[str, Any], return_tensors: str | None) -> dict[str, Any]:
    """Lists -> ``torch.long`` tensors ("pt") or numpy arrays ("np"); rows must have one length."""
    if return_tensors is None:
        return data
    if return_tensors not in _TENSOR_TYPES:
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    import numpy

    arrays = {}
    for key, rows in data.items():
        if key == "length" or (rows and not isinstance(rows[0], (list, tuple))):  # one row of pad()
            arrays[key] = numpy.asarray(rows, dtype=numpy.int64)
            continue
        widths = {len(row) for row in rows}
        if len(widths) > 1:
            raise ValueError(
                f"Rows of {key} have different lengths ({sorted(widths)}), so they cannot form one tensor: pass "
                f"padding=True (or 'max_length'), and truncation=True if rows may be longer than max_length."
            )
        shape = (len(rows), widths.pop() if widths else 0) + ((2,) if key == "offset_mapping" else ())
        arrays[key] = numpy.asarray(rows, dtype=numpy.int64).reshape(shape)  # reshape: an empty batch is (0, 0)
    if return_tensors == "np":
        return arrays
    import torch

    return {key: torch.from_numpy(array) for key, array in arrays.items()}
