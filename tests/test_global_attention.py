"""Tests for spacy_led.global_attention: strategies chosen on spaCy Docs, mapped onto BPE pieces.

The pieces come from the tiny BART-style tokenizer of tests/tokenizer_fixture.py, whose small vocabulary
splits words, accented letters, CJK characters and emoji into several pieces: exactly the cases where the
character-offset mapping has to mark every piece of a token. Expectations are written as the *text* the
marked pieces cover, so they read as what a user means ("the first word of each sentence").
"""

from __future__ import annotations

import pickle
import random

import pytest
import spacy
from spacy.tokens import Doc, Span
from thinc.api import Config

from spacy_led.global_attention import (
    FirstToken,
    GlobalAttention,
    QuestionTokens,
    SentenceStarts,
    doc_text,
    global_mask_for_pieces,
    make_first_token_strategy,
    make_question_tokens_strategy,
    make_sentence_starts_strategy,
    question_sentences,
    sentence_spans,
    text_length_of,
    to_global_attention,
)
from spacy_led.tokenizer import LEDTokenizer

try:
    from tokenizer_fixture import make_tokenizer_dir
except ImportError:  # tests/ imported as a package
    from tests.tokenizer_fixture import make_tokenizer_dir


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return LEDTokenizer.from_pretrained(make_tokenizer_dir(tmp_path_factory.mktemp("ga_tok")))


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


@pytest.fixture(scope="module")
def nlp_sents():
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def mask_of(result, doc, encoding, **kwargs):
    """What a component does: normalise the strategy's result, then map it onto the encoding's pieces."""
    attention = to_global_attention(result, doc)
    return global_mask_for_pieces(
        attention, encoding.offsets, encoding.special_tokens_mask, encoding.sequence_ids, **kwargs
    )


def marked_strings(text, encoding, mask, segment=0):
    """The text under the marked pieces of ``segment``, adjacent or overlapping pieces joined into one string."""
    runs = []
    for (start, end), marked, sid in zip(encoding.offsets, mask, encoding.sequence_ids):
        if not marked or sid != segment:
            continue
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [text[a:b] for a, b in runs]


def pieces_over(encoding, start, end, segment=0):
    """Indices of the pieces of ``segment`` overlapping characters [start, end)."""
    return [
        i
        for i, ((s, e), sid) in enumerate(zip(encoding.offsets, encoding.sequence_ids))
        if sid == segment and s < end and start < e
    ]


# ----------------------------------------------------------------------------------- GlobalAttention
def test_global_attention_normalises_and_validates_spans():
    assert GlobalAttention().char_spans == [] and GlobalAttention().bos is False
    assert GlobalAttention(char_spans=[[1, 3], (4, 4)]).char_spans == [(1, 3), (4, 4)]
    with pytest.raises(ValueError, match="start <= end"):
        GlobalAttention(char_spans=[(5, 2)])
    with pytest.raises(ValueError, match="start <= end"):
        GlobalAttention(char_spans=[(-1, 2)])
    with pytest.raises(TypeError, match=r"\(start, end\) pairs"):
        GlobalAttention(char_spans=[(1,)])
    with pytest.raises(TypeError, match="two ints"):
        GlobalAttention(char_spans=[(True, 2)])
    with pytest.raises(TypeError, match="list of"):
        GlobalAttention(char_spans="0-3")
    with pytest.raises(TypeError, match="bool"):
        GlobalAttention(bos="yes")


# ------------------------------------------------------------------------------- to_global_attention
def test_to_global_attention_accepts_tokens_spans_and_indices(nlp):
    doc = nlp("  Hello\tbrave  new world")
    assert [t.text for t in doc] == ["  ", "Hello", "\t", "brave", " ", "new", "world"]
    assert to_global_attention([doc[1]], doc) == GlobalAttention(char_spans=[(2, 7)])
    assert to_global_attention([doc[3:6]], doc).char_spans == [(8, 18)]  # the span's whole range
    assert to_global_attention([-1, 3], doc).char_spans == [(19, 24), (8, 13)]
    mixed = to_global_attention((x for x in [doc[6], doc[1:2], 5]), doc)  # any iterable, mixed items
    assert mixed == GlobalAttention(bos=False, char_spans=[(19, 24), (2, 7), (15, 18)])
    assert to_global_attention(doc[5:7], doc).char_spans == [(15, 24)]  # one Span is one range
    assert to_global_attention(doc[1], doc).char_spans == [(2, 7)]
    assert to_global_attention([], doc) == GlobalAttention()
    own = GlobalAttention(bos=True, char_spans=[(0, 24)])
    assert to_global_attention(own, doc) is own


@pytest.mark.parametrize(
    "result, returned",
    [
        (None, "NoneType"),
        ("Hello", "str"),
        ({0: 1}, "dict"),
        (3, "int"),
        ([1.5], "float"),
        ([True], "bool"),
        ([(0, 3)], "tuple"),
        (["Hello"], "str"),
    ],
)
def test_to_global_attention_rejects_other_types(nlp, result, returned):
    doc = nlp("Hello brave new world")
    with pytest.raises(TypeError) as info:
        to_global_attention(result, doc)
    message = str(info.value)
    assert returned in message  # what came back
    assert "GlobalAttention" in message and "Token" in message and "Span" in message  # what is accepted


def test_to_global_attention_refuses_foreign_or_out_of_range_items(nlp):
    doc, other = nlp("Hello brave new world"), nlp("Another text")
    with pytest.raises(ValueError, match="another Doc"):
        to_global_attention([other[0]], doc)
    with pytest.raises(ValueError, match="another Doc"):
        to_global_attention([other[0:1]], doc)
    with pytest.raises(IndexError, match="token index 4 .* 4 tokens"):
        to_global_attention([0, 4], doc)
    with pytest.raises(IndexError, match="token index -5"):
        to_global_attention([-5], doc)
    with pytest.raises(ValueError, match="beyond the Doc's text"):
        to_global_attention(GlobalAttention(char_spans=[(0, 22)]), doc)


# ----------------------------------------------------------------------------------- first token
def test_first_token_marks_only_bos_of_single_and_pair_encodings(nlp, tokenizer):
    strategy = spacy.registry.resolve({"s": {"@misc": "spacy_led.first_token.v1"}})["s"]
    assert strategy == FirstToken()
    doc = nlp("Summarize this, please.")
    for encoding in (tokenizer.encode_with_offsets(doc.text), tokenizer.encode_with_offsets("What?", doc.text)):
        mask = mask_of(strategy(doc), doc, encoding)
        assert mask == [1] + [0] * (len(encoding) - 1)
        assert encoding.tokens[0] == "<s>"


def test_bos_needs_a_special_first_piece(nlp, tokenizer):
    encoding = tokenizer.encode_with_offsets("No specials here", add_special_tokens=False)
    with pytest.raises(ValueError, match="add_special_tokens=True"):
        global_mask_for_pieces(GlobalAttention(bos=True), encoding.offsets, encoding.special_tokens_mask)
    assert global_mask_for_pieces(GlobalAttention(bos=True), [], []) == []


# -------------------------------------------------------------------------------- sentence starts
def test_sentence_starts_with_odd_whitespace(nlp_sents, tokenizer):
    text = "  Hello world.  How are\tyou?\n\nI am fine!  Thanks"
    doc = nlp_sents(text)
    strategy = make_sentence_starts_strategy()
    encoding = tokenizer.encode_with_offsets(text)
    mask = mask_of(strategy(doc), doc, encoding)
    assert mask[0] == 1  # <s>
    assert marked_strings(text, encoding, mask) == ["Hello", "How", "I", "Thanks"]
    no_bos = mask_of(make_sentence_starts_strategy(include_first_token=False)(doc), doc, encoding)
    assert no_bos[0] == 0 and no_bos[1:] == mask[1:]


def test_sentence_starts_mark_every_piece_of_multibyte_tokens(nlp_sents, tokenizer):
    text = "Café crème. Ünïcode ok. 😀 smile! Is that so？ Yes"
    doc = nlp_sents(text)
    encoding = tokenizer.encode_with_offsets(text)
    mask = mask_of(SentenceStarts()(doc), doc, encoding)
    assert marked_strings(text, encoding, mask) == ["Café", "Ünïcode", "😀", "Is", "Yes"]
    emoji = text.index("😀")
    emoji_pieces = pieces_over(encoding, emoji, emoji + 1)
    assert len(emoji_pieces) >= 2  # the case under test: one character, several byte pieces
    assert all(mask[i] for i in emoji_pieces)
    word = text.index("Ü")
    assert all(mask[i] for i in pieces_over(encoding, word, word + len("Ünïcode")))


def test_sentence_starts_on_cjk_with_punctuation_fallback(tokenizer):
    nlp_zh = spacy.blank("zh")  # splits Chinese into characters; sets no sentence boundaries
    text = "东京是首都。我们喜欢吗？好的！"
    doc = nlp_zh(text)
    assert not doc.has_annotation("SENT_START")
    encoding = tokenizer.encode_with_offsets(text)
    mask = mask_of(SentenceStarts(fallback="punctuation")(doc), doc, encoding)
    assert marked_strings(text, encoding, mask) == ["东", "我", "好"]
    for char in "东我好":
        pieces = pieces_over(encoding, text.index(char), text.index(char) + 1)
        assert len(pieces) >= 2 and all(mask[i] for i in pieces)
    assert not doc.has_annotation("SENT_START")  # the fallback does not change the Doc


def test_missing_sentence_boundaries_error_names_the_fix(nlp):
    doc = nlp("One sentence. Another one.")
    with pytest.raises(ValueError) as info:
        make_sentence_starts_strategy()(doc)
    message = str(info.value)
    for fix in ("spacy_led.sentence_starts.v1", 'add_pipe("sentencizer"', "senter", "parser", "punctuation"):
        assert fix in message
    with pytest.raises(ValueError, match="sentencizer"):
        make_question_tokens_strategy(fallback="error")(doc)
    with pytest.raises(ValueError, match="sentencizer"):
        question_sentences(doc, "error")
    assert SentenceStarts()(nlp("")) == GlobalAttention(bos=True)  # nothing to split, nothing to complain about


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Wait... what?! Yes.\n\nNew paragraph\there", ["Wait...", "what?!", "Yes.", "New paragraph\there"]),
        ('He asked "why?" She left.', ['He asked "why?"', "She left."]),
        ("(Really?) Yes.", ["(Really?)", "Yes."]),
        ("Pi is 3.14 and a?b=c stays. Next", ["Pi is 3.14 and a?b=c stays.", "Next"]),
        ("Is it ready？ Yes。 Done", ["Is it ready？", "Yes。", "Done"]),
        # "Yes。Done" is one token for the English tokenizer: a sentence cannot end inside it.
        ("Is it ready？ Yes。Done", ["Is it ready？", "Yes。Done"]),
        ("   Leading spaces.  Trailing  ", ["Leading spaces.", "Trailing"]),
        ("No punctuation at all", ["No punctuation at all"]),
    ],
)
def test_punctuation_fallback_splits_on_sentence_final_punctuation(nlp, text, sentences):
    doc = nlp(text)
    spans = sentence_spans(doc, "punctuation")
    assert [span.text.strip() for span in spans] == sentences
    assert spans[0].start == 0 and spans[-1].end == len(doc)  # every token in exactly one sentence
    assert all(a.end == b.start for a, b in zip(spans, spans[1:]))
    assert all(not span[0].is_space for span in spans[1:])  # sentences begin with a word
    assert not doc.has_annotation("SENT_START")


def test_sentence_spans_prefer_the_docs_own_boundaries(nlp_sents):
    doc = nlp_sents("Dr. Smith arrived. He sat.")
    assert [s.text for s in sentence_spans(doc, "punctuation")] == [s.text for s in doc.sents]


def test_fallback_values_are_validated():
    for make in (make_sentence_starts_strategy, make_question_tokens_strategy):
        with pytest.raises(ValueError, match="'error', 'punctuation'"):
            make(fallback="comma")
        with pytest.raises(TypeError, match="include_first_token"):
            make(include_first_token="yes")
    with pytest.raises(ValueError, match="fallback='comma'"):
        spacy.registry.resolve({"s": {"@misc": "spacy_led.sentence_starts.v1", "fallback": "comma"}})
    with pytest.raises(ValueError, match="'error', 'punctuation'"):
        question_sentences(spacy.blank("en")("Why?"), "none")


# -------------------------------------------------------------------------------------- questions
def test_question_sentences(nlp, nlp_sents):
    text = 'The sky is blue. Why is it blue?  Because of scattering. She asked: "Is it?" Is that so？\n'
    for doc, fallback in ((nlp_sents(text), "error"), (nlp(text), "punctuation")):
        questions = question_sentences(doc, fallback)
        assert [q.text.strip() for q in questions] == ["Why is it blue?", 'She asked: "Is it?"', "Is that so？"]
        assert all(isinstance(q, Span) and q.doc is doc for q in questions)
    assert question_sentences(nlp("No question here. None at all!")) == []


def test_question_tokens_mark_every_token_of_each_question(nlp, tokenizer):
    text = "Context first.  What is  LED?\tIt is a model. Où est 東京？"
    doc = nlp(text)
    encoding = tokenizer.encode_with_offsets(text)
    mask = mask_of(make_question_tokens_strategy()(doc), doc, encoding)
    assert mask[0] == 1
    assert marked_strings(text, encoding, mask) == ["What", "is", "LED?", "Où", "est", "東京？"]
    start = text.index("東京")
    assert all(mask[i] for i in pieces_over(encoding, start, start + 3))
    without_bos = mask_of(QuestionTokens(include_first_token=False)(doc), doc, encoding)
    assert without_bos[0] == 0


# ------------------------------------------------------------------------------- pairs and windows
def test_segment_picks_the_text_of_a_pair(nlp, tokenizer):
    question, context = "Where is  it?", "It is here. Nowhere else."
    qdoc, cdoc = nlp(question), nlp(context)
    encoding = tokenizer.encode_with_offsets(question, context)  # <s> question </s></s> context </s>
    context_starts = to_global_attention(SentenceStarts(fallback="punctuation")(cdoc), cdoc)
    on_context = global_mask_for_pieces(
        context_starts, encoding.offsets, encoding.special_tokens_mask, encoding.sequence_ids, segment=1
    )
    assert marked_strings(context, encoding, on_context, segment=1) == ["It", "Nowhere"]
    assert marked_strings(question, encoding, on_context, segment=0) == []
    assert on_context[0] == 1  # <s>, once, whatever the segment
    # The same character ranges read against the question's text mark other pieces: segment matters.
    on_question = global_mask_for_pieces(
        context_starts, encoding.offsets, encoding.special_tokens_mask, encoding.sequence_ids, segment=0
    )
    assert marked_strings(question, encoding, on_question, segment=0) == ["Wh", "?"]
    assert marked_strings(context, encoding, on_question, segment=1) == []
    # HF's QA recipe: every question token global, the context local.
    all_question = mask_of(QuestionTokens(include_first_token=False)(qdoc), qdoc, encoding, segment=0)
    assert marked_strings(question, encoding, all_question, segment=0) == ["Where", "is", "it?"]
    assert all(not m for m, sid in zip(all_question, encoding.sequence_ids) if sid != 0)


def test_segment_needs_sequence_ids():
    with pytest.raises(ValueError, match="sequence_ids"):
        global_mask_for_pieces(GlobalAttention(), [(0, 1)], [0], segment=1)


def test_char_shift_maps_doc_spans_onto_a_window(nlp_sents, tokenizer):
    text = "First part here. Second sentence starts. Third one ends it!"
    doc = nlp_sents(text)
    attention = to_global_attention(SentenceStarts(include_first_token=False)(doc), doc)
    shift = text.index("Second") - 1  # the window begins at the space before "Second"
    window = text[shift:]
    encoding = tokenizer.encode_with_offsets(window)
    mask = global_mask_for_pieces(attention, encoding.offsets, encoding.special_tokens_mask, char_shift=shift)
    assert marked_strings(window, encoding, mask) == ["Second", "Third"]  # "First" lies before the window
    unshifted = global_mask_for_pieces(attention, encoding.offsets, encoding.special_tokens_mask)
    assert marked_strings(window, encoding, unshifted) != ["Second", "Third"]


# -------------------------------------------------------------------------- global_mask_for_pieces
def test_zero_width_spans_mark_the_piece_holding_the_character(tokenizer):
    text = "Hello  world"
    encoding = tokenizer.encode_with_offsets(text)

    def marked(spans):
        mask = global_mask_for_pieces(GlobalAttention(char_spans=spans), encoding.offsets, encoding.special_tokens_mask)
        return marked_strings(text, encoding, mask)

    assert marked([(0, 0)]) == ["Hello"]
    assert len(marked([(9, 9)])) == 1 and marked([(9, 9)])[0] in "world"  # inside "world"
    assert marked([(6, 6)]) == []  # a space the tokenizer trims from every piece
    assert marked([(len(text), len(text))]) == []  # past the last character


def naive_mask(spans, offsets, special, sequence_ids, segment, shift):
    """The definition, O(pieces x spans)."""
    shifted = [(a - shift, b - shift) for a, b in spans]
    mask = []
    for (s, e), sp, sid in zip(offsets, special, sequence_ids):
        keep = not sp and sid == segment
        hit = any((s < b and a < e) if a != b else (s <= a < e) for a, b in shifted)
        mask.append(int(keep and hit))
    return mask


def test_mask_matches_the_definition_on_random_pieces_and_spans():
    rng = random.Random(1234)
    for _ in range(200):
        offsets, special, sequence_ids = [(0, 0)], [1], [None]
        for segment in (0, 1):
            position = 0
            for _ in range(rng.randint(0, 30)):
                start = position + rng.randint(0, 2)
                end = start + rng.choice([0, 1, 1, 2, 3])  # zero-width pieces as trimmed spaces give
                offsets.append((start, end))
                offsets.extend([(start, end)] * rng.choice([0, 0, 2]))  # several pieces of one character
                position = end
            added = len(offsets) - len(special)
            special += [0] * added
            sequence_ids += [segment] * added
            offsets.append((0, 0))
            special.append(1)
            sequence_ids.append(None)
        spans = []
        for _ in range(rng.randint(0, 8)):
            a = rng.randint(0, 60)
            spans.append((a, a + rng.choice([0, 0, 1, 2, 5, 10])))
        shift = rng.choice([0, 3, 10])
        segment = rng.choice([0, 1])
        got = global_mask_for_pieces(GlobalAttention(char_spans=spans), offsets, special, sequence_ids, segment, shift)
        assert got == naive_mask(spans, offsets, special, sequence_ids, segment, shift), (spans, offsets, shift)


def test_mask_checks_its_inputs():
    with pytest.raises(TypeError, match="to_global_attention"):
        global_mask_for_pieces([(0, 1)], [(0, 1)], [0])
    with pytest.raises(ValueError, match="special_tokens_mask"):
        global_mask_for_pieces(GlobalAttention(), [(0, 1), (1, 2)], [0])
    with pytest.raises(ValueError, match="sequence_ids"):
        global_mask_for_pieces(GlobalAttention(), [(0, 1)], [0], [0, 0])


class CountingSpans(list):
    """A span list that counts how many items it hands out, to spot a scan of all spans per piece."""

    handed_out = 0

    def __iter__(self):
        for item in super().__iter__():
            self.handed_out += 1
            yield item

    def __getitem__(self, index):
        self.handed_out += 1
        return super().__getitem__(index)


def test_mask_scales_to_16k_pieces_and_thousands_of_spans():
    n_pieces, n_spans = 16384, 2048
    offsets = [(3 * i, 3 * i + 2) for i in range(n_pieces)]  # words of 2 characters, a space between
    special = [0] * n_pieces
    spans = CountingSpans((3 * i, 3 * i + 1) for i in range(n_pieces - 8, -1, -8))  # every 8th piece, unsorted
    assert len(spans) == n_spans
    attention = GlobalAttention()
    attention.char_spans = spans  # after validation, so the spy sees only what the mask computation does
    mask = global_mask_for_pieces(attention, offsets, special)
    assert mask == [int(i % 8 == 0) for i in range(n_pieces)]
    # One pass over the spans per call, not one per piece (that would be 16384 x 2048 items); the time it
    # takes is measured by benchmarks/bench_global_mask.py.
    assert spans.handed_out <= 2 * n_spans


# ----------------------------------------------------------------------------------------- registry
def test_registered_names_resolve_to_the_factories():
    assert spacy.registry.misc.get("spacy_led.first_token.v1") is make_first_token_strategy
    assert spacy.registry.misc.get("spacy_led.sentence_starts.v1") is make_sentence_starts_strategy
    assert spacy.registry.misc.get("spacy_led.question_tokens.v1") is make_question_tokens_strategy
    config = Config().from_str(
        """
        [summary]
        @misc = "spacy_led.sentence_starts.v1"
        include_first_token = false
        fallback = "punctuation"

        [qa]
        @misc = "spacy_led.question_tokens.v1"
        """
    )
    resolved = spacy.registry.resolve(config)
    assert resolved["summary"] == SentenceStarts(include_first_token=False, fallback="punctuation")
    assert resolved["qa"] == QuestionTokens(include_first_token=True, fallback="punctuation")
    for strategy in resolved.values():  # picklable, for nlp.pipe(n_process=...)
        assert pickle.loads(pickle.dumps(strategy)) == strategy


def test_a_user_registered_strategy_resolves_from_config(nlp, tokenizer):
    @spacy.registry.misc("test_spacy_led.entity_strategy.v1")
    def make_entity_strategy(labels: list = ["PERSON"]):
        def strategy(doc):
            return [ent for ent in doc.ents if ent.label_ in labels]

        return strategy

    config = Config().from_str(
        """
        [components]

        [components.summarizer]

        [components.summarizer.global_attention]
        @misc = "test_spacy_led.entity_strategy.v1"
        labels = ["ORG"]
        """
    )
    strategy = spacy.registry.resolve(config)["components"]["summarizer"]["global_attention"]
    text = "Ada Lovelace joined  Analytical Engines Ltd in London."
    doc = nlp(text)
    doc.ents = [Span(doc, 0, 2, label="PERSON"), Span(doc, 4, 7, label="ORG"), Span(doc, 8, 9, label="GPE")]
    encoding = tokenizer.encode_with_offsets(text)
    mask = mask_of(strategy(doc), doc, encoding)
    assert mask[0] == 0  # a list of spans leaves <s> alone
    assert marked_strings(text, encoding, mask) == ["Analytical", "Engines", "Ltd"]


def test_a_component_config_names_the_strategy(tokenizer):
    """The way the LED components take it: a factory argument filled from [components.x.global_attention]."""
    from spacy.language import Language

    @spacy.registry.misc("test_spacy_led.capitalised.v1")
    def make_capitalised():
        return lambda doc: [t for t in doc if t.is_title]

    @Language.factory("test_spacy_led_probe", default_config={"global_attention": {"@misc": "spacy_led.first_token.v1"}})
    def make_probe(nlp, name, global_attention):
        def probe(doc):
            doc.user_data["global_attention"] = to_global_attention(global_attention(doc), doc)
            return doc

        return probe

    default = spacy.blank("en")
    default.add_pipe("test_spacy_led_probe")
    assert default("a Text").user_data["global_attention"] == GlobalAttention(bos=True)
    custom = spacy.blank("en")
    custom.add_pipe("test_spacy_led_probe", config={"global_attention": {"@misc": "test_spacy_led.capitalised.v1"}})
    assert custom("a Text here Now").user_data["global_attention"] == GlobalAttention(char_spans=[(2, 6), (12, 15)])


@pytest.mark.parametrize("text", ["", " ", "a", "Hello  world!\n\n", "  x ", "東京 😀 ", "a\t", "end."])
def test_text_length_of_is_the_length_of_doc_text(text):
    doc = spacy.blank("en").make_doc(text)
    assert text_length_of(doc) == len(doc.text) == len(text)


def test_doc_text_is_doc_text():
    """Built from the distinct words: each token's own word, and its space only where it has one."""
    nlp = spacy.blank("en")
    texts = ["", " ", "a", "Hello  world!\n\n", "  x ", "東京 😀 ", "a\t", "a a  a\na", "The the THE the. the"]
    assert [doc_text(nlp.make_doc(text)) for text in texts] == texts
    words = Doc(nlp.vocab, words=["a", "b", "a", "a", "c"], spaces=[True, False, False, True, False])
    assert doc_text(words) == words.text == "a baa c"
