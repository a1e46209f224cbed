"""spacy_led.pipes.windows without a model: how documents are cut into windows and windows into batches."""
import logging
import random

import pytest

from spacy_led.pipes.windows import (
    DocumentTooLong,
    Encoded,
    Window,
    WindowLimits,
    batches,
    cut,
    padded,
    window_starts,
)

BOS, EOS, PAD = 0, 2, 1


def encoded(n, globals_at=(), bos_global=True):
    """``n`` pieces with ids 100.. and offsets of 3-character words separated by a space."""
    return Encoded(
        ids=[100 + i for i in range(n)],
        offsets=[(4 * i, 4 * i + 3) for i in range(n)],
        global_mask=[int(i in globals_at) for i in range(n)],
        bos_global=bos_global,
    )


def naive_starts(total, room, overlap):
    """The rule spelt out: a window every room - overlap pieces (at least 1) until one reaches the end."""
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + room >= total:
            return starts
        start += max(1, room - overlap)


def test_window_starts_follow_the_rule_for_random_sizes():
    rng = random.Random(0)
    for _ in range(2000):
        total, room = rng.randint(0, 300), rng.randint(1, 60)
        overlap = rng.randint(0, room + 5)
        starts = window_starts(total, room, overlap)
        assert starts == naive_starts(total, room, overlap), (total, room, overlap)
        covered = set()
        for s in starts:
            covered.update(range(s, min(s + room, total)))
        assert covered == set(range(total))  # every piece is in a window
        assert all(s < total for s in starts[1:])  # no empty trailing window


def test_chunks_hold_every_piece_once_without_overlap_and_with_the_specials():
    limits = WindowLimits(max_positions=12, overflow="chunk", bos_token_id=BOS, eos_token_id=EOS)
    enc = encoded(25, globals_at=(3, 20))
    windows = cut(7, enc, limits)
    assert [len(w) for w in windows] == [12, 12, 7]  # 10 + 10 + 5 pieces, each with <s> and </s>
    assert [p for w in windows for p in w.ids[1:-1]] == enc.ids
    assert [p for w in windows for p in w.offsets] == enc.offsets
    for w in windows:
        assert w.doc_index == 7 and w.ids[0] == BOS and w.ids[-1] == EOS and w.content_start == 1
        assert w.global_mask == [1, *enc.global_mask[w.piece_start : w.piece_start + len(w.offsets)], 0]
    assert [w.piece_start for w in windows] == [0, 10, 20]


def test_overlapping_chunks_share_exactly_the_overlap():
    limits = WindowLimits(max_positions=12, overflow="chunk", overlap=4)
    windows = cut(0, encoded(30), limits)
    for left, right in zip(windows, windows[1:]):
        assert right.piece_start == left.piece_start + 6
        assert left.ids[1:-1][-4:] == right.ids[1:5]
    assert windows[-1].ids[-2] == 129  # the last window ends with the last piece


def test_error_mode_names_length_and_limit_and_truncate_logs_the_loss(caplog):
    enc = encoded(25)
    with pytest.raises(DocumentTooLong, match=r"document 3 has 25 BPE pieces but component 'x' reads at most 10"):
        cut(3, enc, WindowLimits(max_positions=12, overflow="error"), source="component 'x'")
    with caplog.at_level(logging.WARNING, logger="spacy_led"):
        (window,) = cut(3, enc, WindowLimits(max_positions=12, overflow="truncate"))
    assert window.ids[1:-1] == enc.ids[:10]
    assert "15 pieces (from character 40 on) dropped" in caplog.text
    assert cut(3, encoded(10), WindowLimits(max_positions=12, overflow="error"))[0].ids[1:-1] == encoded(10).ids


def test_a_prefix_sits_between_bos_and_the_document_and_takes_room():
    limits = WindowLimits(max_positions=12, overflow="chunk")
    windows = cut(0, encoded(9, bos_global=False), limits, prefix=[50, 51, EOS, EOS], prefix_global=[1, 1, 0, 0],
                  extra={"question": "q"})
    assert [w.ids for w in windows] == [[BOS, 50, 51, EOS, EOS, 100, 101, 102, 103, 104, 105, EOS],
                                        [BOS, 50, 51, EOS, EOS, 106, 107, 108, EOS]]
    assert windows[0].global_mask == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert all(w.content_start == 5 and w.extra == {"question": "q"} for w in windows)
    windows[0].extra["question"] = "changed"
    assert windows[1].extra == {"question": "q"}  # each window has its own task data
    with pytest.raises(DocumentTooLong, match="shorten the question"):
        cut(0, encoded(3), limits, prefix=list(range(10)), prefix_global=[0] * 10)
    with pytest.raises(ValueError, match="prefix_global"):
        cut(0, encoded(3), limits, prefix=[5, 6], prefix_global=[1])


def test_limits_reject_unknown_overflow_and_negative_overlap():
    with pytest.raises(ValueError, match="overflow='wrap'"):
        WindowLimits(max_positions=12, overflow="wrap")
    with pytest.raises(ValueError, match="chunk_overlap"):
        WindowLimits(max_positions=12, overlap=-1)


def _window(length, tag):
    return Window(doc_index=tag, ids=[BOS] + [5] * (length - 2) + [EOS], global_mask=[0] * length, content_start=1,
                  offsets=[])


def test_batches_keep_every_window_once_and_stay_under_the_budget():
    rng = random.Random(1)
    for _ in range(300):
        budget = rng.randint(1, 400)
        windows = [_window(rng.randint(2, 120), i) for i in range(rng.randint(0, 30))]
        groups = list(batches(windows, budget))
        assert sorted(id(w) for g in groups for w in g) == sorted(id(w) for w in windows)
        lengths = [len(w) for g in groups for w in g]
        assert lengths == sorted(lengths)  # short windows together, little padding
        for i, group in enumerate(groups):
            padded_size = len(group) * max(len(w) for w in group)
            assert padded_size <= budget or len(group) == 1
            if i + 1 < len(groups):  # greedy: the next window would not have fitted
                assert (len(group) + 1) * len(groups[i + 1][0]) > budget
    with pytest.raises(ValueError, match="batch_token_budget"):
        list(batches([_window(4, 0)], 0))


def test_padded_right_pads_with_masks():
    a = Window(0, [BOS, 7, 8, EOS], [1, 0, 1, 0], 1, [])
    b = Window(1, [BOS, 9, EOS], [1, 0, 0], 1, [])
    tensors = padded([a, b], PAD)
    assert tensors["input_ids"].tolist() == [[BOS, 7, 8, EOS], [BOS, 9, EOS, PAD]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert tensors["global_attention_mask"].tolist() == [[1, 0, 1, 0], [1, 0, 0, 0]]
