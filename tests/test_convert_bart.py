"""convert-bart: an LED made from a BART checkpoint computes what BART computes, and transformers' LED agrees.

Reference: transformers' BartForConditionalGeneration on tiny random BART checkpoints of several shapes (layer and
head counts, FFN sizes, activation functions). Inputs no longer than half the converted window, where the recipe
is exact; float32 tolerance 1e-5 relative to the largest value.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spacy_led.modeling import LEDForConditionalGeneration
from spacy_led.modeling.convert_bart import ConversionError, convert_bart_to_led
from spacy_led.tokenizer import LEDTokenizer

from conftest import LONG_TEXT, relative_error
from hub_cache import write_hub_cache
from tokenizer_fixture import make_tokenizer_dir

VOCAB = 500
BART_POSITIONS = 48
WINDOW = 64  # one-sided 32: inputs of up to 33 tokens see every token, as in BART
MAX_POSITIONS = 256
EOS = 2

SHAPES = {
    "gelu": dict(encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=37, decoder_ffn_dim=37, activation_function="gelu"),
    "relu-deep-encoder": dict(encoder_layers=3, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=8,
                              encoder_ffn_dim=48, decoder_ffn_dim=20, activation_function="relu"),
    "gelu_new-deep-decoder": dict(encoder_layers=1, decoder_layers=3, encoder_attention_heads=8,
                                  decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=40,
                                  activation_function="gelu_new"),
    "silu": dict(encoder_layers=2, decoder_layers=2, encoder_attention_heads=1, decoder_attention_heads=4,
                 encoder_ffn_dim=16, decoder_ffn_dim=64, activation_function="silu"),
}


def make_bart(transformers, path, seed=0, **changes):
    """A random BartForConditionalGeneration saved by transformers, with a BART-style tokenizer beside it."""
    torch.manual_seed(seed)
    config = transformers.BartConfig(**{**dict(vocab_size=VOCAB, d_model=32, max_position_embeddings=BART_POSITIONS,
                                               init_std=0.3), **SHAPES["gelu"], **changes})
    model = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = 2.0  # a bias to carry over (random models have none)
    model.save_pretrained(path)
    make_tokenizer_dir(path, vocab_size=VOCAB)
    return model


@pytest.fixture(scope="module", params=sorted(SHAPES))
def converted(request, transformers_led, tmp_path_factory):
    """(BART reference, spacy-led LED from the converted checkpoint, converted checkpoint dir)."""
    source = tmp_path_factory.mktemp("bart")
    bart = make_bart(transformers_led, source, seed=len(request.param), **SHAPES[request.param])
    dest = tmp_path_factory.mktemp("led") / "converted"
    convert_bart_to_led(source, dest, max_positions=MAX_POSITIONS, attention_window=WINDOW)
    return bart, LEDForConditionalGeneration.from_pretrained(dest), dest


def _batch(length=30, seed=0):
    """Right-padded rows of ``length``, 21 and 9 real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB - 1, (3, length), generator=generator)
    mask = torch.zeros_like(ids)
    for row, n in enumerate((length, 21, 9)):
        ids[row, 0], ids[row, n - 1], ids[row, n:] = 0, EOS, 1
        mask[row, :n] = 1
    return ids, mask


def _globals(ids, positions=((0, 5, 17), (0,), ())):
    glob = torch.zeros_like(ids)
    for row, cols in enumerate(positions):
        glob[row, list(cols)] = 1
    return glob


def _close(actual, expected):
    assert actual.numel() > 1000 and expected.abs().max() > 0.1  # a real comparison, not of zeros
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("with_globals", [False, True])
def test_converted_led_computes_what_bart_computes(converted, with_globals):
    bart, led, _ = converted
    ids, mask = _batch()
    glob = _globals(ids) if with_globals else None
    decoder_ids = torch.randint(4, VOCAB - 1, (3, 11), generator=torch.Generator().manual_seed(1))
    decoder_ids[:, 0] = EOS
    with torch.no_grad():
        expected_states = bart.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        actual_states = led.led.encoder(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        expected = bart(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
        actual = led(input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=decoder_ids).logits
    real = mask.bool()
    _close(actual_states[real], expected_states[real])
    _close(actual, expected)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_converted_led_generates_what_bart_generates(converted, num_beams):
    bart, led, _ = converted
    ids, mask = _batch()
    settings = dict(num_beams=num_beams, max_new_tokens=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = bart.generate(ids, attention_mask=mask, **settings)
    actual = led.generate(ids, attention_mask=mask, global_attention_mask=_globals(ids), **settings)
    assert actual.shape == expected.shape and torch.equal(actual, expected), (actual, expected)
    assert len({tuple(row) for row in expected.tolist()}) >= 2  # the output depends on the input


def test_position_tables_drop_bart_offset_and_repeat(converted):
    bart, led, _ = converted
    encoder = led.led.encoder.embed_positions.weight
    decoder = led.led.decoder.embed_positions.weight
    bart_encoder = bart.model.encoder.embed_positions.weight
    assert encoder.shape == (MAX_POSITIONS, 32) and decoder.shape == (BART_POSITIONS, 32)
    rows = torch.arange(MAX_POSITIONS)
    assert torch.equal(encoder, bart_encoder[rows % BART_POSITIONS + 2])
    assert torch.equal(decoder, bart.model.decoder.embed_positions.weight[2:])
    # the global projections start as copies of the local ones
    attention = led.led.encoder.layers[0].self_attn.longformer_self_attn
    assert torch.equal(attention.key_global.weight, bart.model.encoder.layers[0].self_attn.k_proj.weight)
    assert torch.equal(attention.query_global.bias, attention.query.bias)


def test_transformers_led_loads_the_converted_checkpoint_with_the_same_outputs(converted, transformers_led):
    _, led, dest = converted
    reference = transformers_led.LEDForConditionalGeneration.from_pretrained(dest).eval()
    ids, mask = _batch(length=200)  # longer than BART's table: the repeated rows are read too
    glob = _globals(ids, ((0, 50, 150), (0,), ()))
    decoder_ids = torch.full((3, 5), EOS)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask, global_attention_mask=glob,
                             decoder_input_ids=decoder_ids).logits
        actual = led(input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=decoder_ids).logits
    _close(actual, expected)


def test_tokenizer_and_generation_settings_are_carried_over(transformers_led, tmp_path):
    source = tmp_path / "bart"
    make_bart(transformers_led, source, seed=3)
    generation = json.loads((source / "generation_config.json").read_text())
    generation.update(num_beams=3, no_repeat_ngram_size=2, forced_bos_token_id=0)
    (source / "generation_config.json").write_text(json.dumps(generation))

    dest = convert_bart_to_led(source, tmp_path / "led", max_positions=MAX_POSITIONS, attention_window=WINDOW)
    carried = LEDForConditionalGeneration.from_pretrained(dest).generation_config
    assert (carried.num_beams, carried.no_repeat_ngram_size, carried.forced_bos_token_id,
            carried.forced_eos_token_id) == (3, 2, 0, 2)
    reference = transformers_led.LEDForConditionalGeneration.from_pretrained(dest)
    assert (reference.generation_config.num_beams, reference.generation_config.no_repeat_ngram_size) == (3, 2)

    converted = LEDTokenizer.from_pretrained(dest)
    assert converted.encode(LONG_TEXT) == LEDTokenizer.from_pretrained(source).encode(LONG_TEXT)
    assert converted.model_max_length == MAX_POSITIONS
    hf_tokenizer = transformers_led.AutoTokenizer.from_pretrained(dest)
    assert hf_tokenizer(LONG_TEXT)["input_ids"] == converted.encode(LONG_TEXT)


def test_old_style_generation_settings_in_config_json_move_to_generation_config(transformers_led, tmp_path):
    """An old BART checkpoint (bart-large-cnn's layout) keeps its generation settings in config.json."""
    source = tmp_path / "bart"
    make_bart(transformers_led, source, seed=4)
    (source / "generation_config.json").unlink()
    config = json.loads((source / "config.json").read_text())
    config.update(num_beams=4, min_length=5, length_penalty=2.0, force_bos_token_to_be_generated=True)
    (source / "config.json").write_text(json.dumps(config))

    dest = convert_bart_to_led(source, tmp_path / "led", max_positions=MAX_POSITIONS, attention_window=WINDOW)
    written = json.loads((dest / "generation_config.json").read_text())
    assert {k: written[k] for k in ("num_beams", "min_length", "length_penalty", "forced_bos_token_id",
                                    "forced_eos_token_id")} == dict(num_beams=4, min_length=5, length_penalty=2.0,
                                                                    forced_bos_token_id=0, forced_eos_token_id=2)
    led_config = json.loads((dest / "config.json").read_text())
    assert not {"num_beams", "min_length", "length_penalty", "force_bos_token_to_be_generated"} & set(led_config)
    carried = LEDForConditionalGeneration.from_pretrained(dest).generation_config
    assert (carried.num_beams, carried.min_length, carried.forced_bos_token_id) == (4, 5, 0)


def test_pickled_bart_weights_and_a_hub_id_source(transformers_led, hf_cache, tmp_path):
    source = tmp_path / "bart"
    bart = make_bart(transformers_led, source, seed=5)
    (source / "model.safetensors").unlink()
    torch.save(bart.state_dict(), source / "pytorch_model.bin")  # old layout: tied copies included
    write_hub_cache(hf_cache, "someone/tiny-bart", source)
    dest = convert_bart_to_led("someone/tiny-bart", tmp_path / "led", max_positions=MAX_POSITIONS,
                               attention_window=WINDOW)
    led = LEDForConditionalGeneration.from_pretrained(dest)
    ids, mask = _batch()
    with torch.no_grad():
        expected = bart(input_ids=ids, attention_mask=mask).logits
        actual = led(input_ids=ids, attention_mask=mask).logits
    _close(actual, expected)


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _edit_weights(path, edit):
    weights = load_file(str(path / "model.safetensors"))
    edit(weights)
    save_file(weights, str(path / "model.safetensors"))


BAD_SOURCES = {
    "mbart": (lambda p: _edit_config(p, model_type="mbart"), "model_type 'mbart'"),
    "led": (lambda p: _edit_config(p, model_type="led"), "already an LED"),
    "scale_embedding": (lambda p: _edit_config(p, scale_embedding=True), "scale_embedding=True"),
    "normalize_before": (lambda p: _edit_config(p, normalize_before=True), "normalize_before=True"),
    "add_final_layer_norm": (lambda p: _edit_config(p, add_final_layer_norm=True), "add_final_layer_norm=True"),
    "static_positions": (lambda p: _edit_config(p, static_position_embeddings=True), "static_position_embeddings"),
    "activation": (lambda p: _edit_config(p, activation_function="gelu_fast"), "activation_function 'gelu_fast'"),
    "missing weight": (lambda p: _edit_weights(p, lambda w: w.pop("model.encoder.layers.1.fc1.weight")),
                       "lacks weight model.encoder.layers.1.fc1.weight"),
    "shape": (lambda p: _edit_config(p, encoder_ffn_dim=40), r"model.encoder.layers.0.fc1.bias .* has shape \(37,\)"),
    "positions": (lambda p: _edit_config(p, max_position_embeddings=50), r"embed_positions.weight .* implies \(52, 32\)"),
    "untied lm_head": (lambda p: _edit_weights(p, lambda w: w.update({"lm_head.weight": torch.randn(VOCAB, 32)})),
                       "lm_head.weight .* differs"),
    "mbart final norm": (lambda p: _edit_weights(p, lambda w: w.update({"model.encoder.layer_norm.weight": torch.ones(32)})),
                         "no place for: \\['model.encoder.layer_norm.weight'\\]"),
    "no tokenizer": (lambda p: (p / "vocab.json").unlink(), "vocab.json"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOURCES))
def test_sources_that_cannot_become_the_same_led_are_refused(case, transformers_led, tmp_path):
    source = tmp_path / "bart"
    make_bart(transformers_led, source)
    edit, message = BAD_SOURCES[case]
    edit(source)
    with pytest.raises((ConversionError, ValueError, FileNotFoundError), match=message):
        convert_bart_to_led(source, tmp_path / "led", max_positions=MAX_POSITIONS, attention_window=WINDOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bart"]  # nothing written, no partial directory


@pytest.mark.parametrize("options, message", [
    (dict(max_positions=1000, attention_window=64), "multiple of attention_window"),
    (dict(max_positions=256, attention_window=63), "positive even number"),
])
def test_bad_options_are_refused(options, message, tmp_path):
    with pytest.raises(ConversionError, match=message):
        convert_bart_to_led(tmp_path / "never-read", tmp_path / "led", **options)


def test_an_existing_destination_is_not_overwritten(transformers_led, tmp_path):
    (tmp_path / "led").mkdir()
    (tmp_path / "led" / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="not an empty directory"):
        convert_bart_to_led(tmp_path / "bart", tmp_path / "led", max_positions=MAX_POSITIONS, attention_window=WINDOW)
    assert (tmp_path / "led" / "notes.txt").read_text() == "keep me"


def test_command_line_converts_a_hub_id_from_the_cache(transformers_led, tmp_path):
    """``spacy-led convert-bart`` in a fresh process that knows the cache only from HF_HOME and HF_HUB_OFFLINE."""
    source = tmp_path / "bart"
    bart = make_bart(transformers_led, source, seed=7)
    write_hub_cache(tmp_path / "hf-home" / "hub", "someone/tiny-bart", source, revision="v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    script = Path(sys.executable).parent / "spacy-led"

    def convert(*args):
        return subprocess.run([str(script), "convert-bart", *args], env=env, capture_output=True, text=True,
                              timeout=300)

    result = convert("someone/tiny-bart@v1", str(tmp_path / "led"), "--max-positions", "256",
                     "--attention-window", "64")
    assert result.returncode == 0, result.stderr
    led = LEDForConditionalGeneration.from_pretrained(tmp_path / "led")
    assert (led.config.max_encoder_position_embeddings, led.config.attention_window) == (256, [64, 64])
    ids, mask = _batch()
    with torch.no_grad():
        _close(led(input_ids=ids, attention_mask=mask).logits, bart(input_ids=ids, attention_mask=mask).logits)

    result = convert("someone/not-cached", str(tmp_path / "led2"))
    assert result.returncode == 1
    assert "hf download someone/not-cached --revision main" in result.stderr
    assert not (tmp_path / "led2").exists()
