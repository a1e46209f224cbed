"""Hub ids wherever a checkpoint is accepted, resolved through huggingface_hub's own cache functions.

Nothing can be downloaded here: each test writes a HuggingFace cache in huggingface_hub's layout (``hub_cache``)
from a tiny random checkpoint and points huggingface_hub at it in offline mode. The functions that would reach the
network are replaced by ones that fail the test (``hf_cache`` in conftest), so a passing test proves the cache
alone answered.
"""
import json
import sys

import pytest
import spacy
import torch

from spacy_led.modeling import LEDConfig, LEDForConditionalGeneration, LEDModel
from spacy_led.modeling.hub import CheckpointNotFound, resolve_checkpoint, select_files, split_hub_id
from spacy_led.tokenizer import LEDTokenizer

from conftest import LONG_TEXT, make_batch, relative_error
from hub_cache import write_hub_cache

REPO = "tiny-org/tiny-led"


@pytest.fixture
def cached_repo(hf_cache, summarizer_checkpoint):
    commit = write_hub_cache(hf_cache, REPO, summarizer_checkpoint)
    return hf_cache, commit


def _logits(model):
    ids, mask, glob = make_batch(length=40, pad_lengths=(40, 31, 20), globals_per_row=((0, 7), (0,), ()))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, global_attention_mask=glob).logits


def test_the_written_cache_is_what_huggingface_hub_reads(cached_repo, summarizer_checkpoint):
    import huggingface_hub

    cache, commit = cached_repo
    info = huggingface_hub.scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model"
    (revision,) = repo.revisions
    assert revision.commit_hash == commit and set(revision.refs) == {"main"}
    assert {f.file_name for f in revision.files} == {p.name for p in summarizer_checkpoint.iterdir()}
    assert all(f.file_path.is_symlink() for f in revision.files)


def test_modeling_class_from_hub_id_equals_the_directory(cached_repo, summarizer_checkpoint):
    cache, commit = cached_repo
    from_dir = LEDForConditionalGeneration.from_pretrained(summarizer_checkpoint)
    from_hub = LEDForConditionalGeneration.from_pretrained(REPO)
    assert torch.equal(_logits(from_hub), _logits(from_dir))
    assert resolve_checkpoint(REPO) == cache / f"models--tiny-org--tiny-led/snapshots/{commit}"
    # LEDModel and LEDConfig take hub ids too
    assert LEDConfig.from_pretrained(REPO).to_dict() == LEDConfig.from_pretrained(summarizer_checkpoint).to_dict()
    assert torch.equal(LEDModel.from_pretrained(REPO).shared.weight, from_dir.led.shared.weight)


def test_revisions_by_name_by_argument_and_by_commit(hf_cache, summarizer_checkpoint, transformers_led, tmp_path):
    from conftest import make_pipeline_checkpoint

    other = make_pipeline_checkpoint(transformers_led, "LEDForConditionalGeneration", tmp_path / "v2", seed=11)
    main_commit = write_hub_cache(hf_cache, REPO, summarizer_checkpoint)
    v2_commit = write_hub_cache(hf_cache, REPO, other, revision="v2")
    assert main_commit != v2_commit
    main = _logits(LEDForConditionalGeneration.from_pretrained(REPO))
    v2 = _logits(LEDForConditionalGeneration.from_pretrained(other))
    assert relative_error(main, v2) > 0.1  # the two revisions really differ
    assert torch.equal(_logits(LEDForConditionalGeneration.from_pretrained(f"{REPO}@v2")), v2)
    assert torch.equal(_logits(LEDForConditionalGeneration.from_pretrained(REPO, revision="v2")), v2)
    assert torch.equal(_logits(LEDForConditionalGeneration.from_pretrained(REPO, revision=v2_commit)), v2)
    assert torch.equal(_logits(LEDForConditionalGeneration.from_pretrained(f"{REPO}@{main_commit}")), main)
    with pytest.raises(ValueError, match="revision 'v2' but revision='main'"):
        resolve_checkpoint(f"{REPO}@v2", revision="main")


def test_tokenizer_from_hub_id_needs_only_the_tokenizer_files(hf_cache, summarizer_checkpoint):
    write_hub_cache(hf_cache, REPO, summarizer_checkpoint, files=["vocab.json", "merges.txt"])
    from_hub = LEDTokenizer.from_pretrained(REPO)
    from_dir = LEDTokenizer.from_pretrained(summarizer_checkpoint)
    assert from_hub.encode(LONG_TEXT) == from_dir.encode(LONG_TEXT)
    assert len(from_dir.encode(LONG_TEXT)) > 50
    with pytest.raises(CheckpointNotFound, match="config.json"):  # the model needs more than that
        LEDForConditionalGeneration.from_pretrained(REPO)


def test_component_from_hub_id_and_saved_pipeline_never_needs_the_hub(cached_repo, summarizer_checkpoint, tmp_path,
                                                                      monkeypatch):
    config = {"num_beams": 2, "max_summary_length": 12}
    from_dir = spacy.blank("en")
    from_dir.add_pipe("led_summarizer", config={"checkpoint": str(summarizer_checkpoint), **config})
    from_hub = spacy.blank("en")
    from_hub.add_pipe("led_summarizer", config={"checkpoint": REPO, **config})
    expected = from_dir(LONG_TEXT)._.summary
    assert expected
    assert from_hub(LONG_TEXT)._.summary == expected
    from_hub.to_disk(tmp_path / "pipeline")

    # The saved pipeline still names the hub id in its config, but carries its own weights: no hub, no cache.
    cache, _ = cached_repo
    for path in sorted(cache.rglob("*"), key=lambda p: -len(p.parts)):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.config["components"]["led_summarizer"]["checkpoint"] == REPO
    assert loaded(LONG_TEXT)._.summary == expected


def test_component_revision_setting(hf_cache, summarizer_checkpoint, transformers_led, tmp_path):
    from conftest import make_pipeline_checkpoint

    other = make_pipeline_checkpoint(transformers_led, "LEDForConditionalGeneration", tmp_path / "v2", seed=11)
    write_hub_cache(hf_cache, REPO, summarizer_checkpoint)
    write_hub_cache(hf_cache, REPO, other, revision="v2")
    v2_weight = LEDForConditionalGeneration.from_pretrained(other).led.shared.weight
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("led_summarizer", config={"checkpoint": REPO, "revision": "v2"})
    pipe.load()
    assert torch.equal(pipe.module.led.shared.weight, v2_weight)

    # [initialize.components] checkpoint + revision: how `spacy train` (and the project) fine-tunes a hub model
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer")
    nlp.config["initialize"]["components"]["led_summarizer"] = {"checkpoint": REPO, "revision": "v2"}
    reference = nlp.make_doc(LONG_TEXT)
    reference._.summary = "A short summary."
    nlp.initialize(lambda: [Example(nlp.make_doc(LONG_TEXT), reference)])
    assert torch.equal(nlp.get_pipe("led_summarizer").module.led.shared.weight, v2_weight)


def test_not_cached_error_names_id_revision_cache_and_command(hf_cache):
    with pytest.raises(CheckpointNotFound) as info:
        LEDForConditionalGeneration.from_pretrained("allenai/led-base-16384@refs/pr/3")
    message = str(info.value)
    for part in ("'allenai/led-base-16384'", "'refs/pr/3'", str(hf_cache), "HF_HUB_OFFLINE",
                 f"hf download allenai/led-base-16384 --revision refs/pr/3 --cache-dir {hf_cache}",
                 '--include "model.safetensors"', '--include "config.json"'):
        assert part in message
    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": "allenai/led-base-16384"})
    with pytest.raises(CheckpointNotFound, match="tokenizer files"):
        nlp("A document.")


def test_missing_hub_extra_is_named_and_local_directories_need_no_hub(summarizer_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r'pip install "spacy-led\[hub\]"'):
        LEDForConditionalGeneration.from_pretrained("allenai/led-base-16384")
    with pytest.raises(ImportError, match=r'pip install "spacy-led\[hub\]"'):
        LEDTokenizer.from_pretrained("allenai/led-base-16384")
    LEDForConditionalGeneration.from_pretrained(summarizer_checkpoint)  # a directory never imports the hub


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    assert split_hub_id("allenai/led-base-16384") == ("allenai/led-base-16384", None)
    assert split_hub_id("allenai/led-base-16384@v1.0") == ("allenai/led-base-16384", "v1.0")
    assert split_hub_id("org/name", "main") == ("org/name", "main")
    for local in ("path/to/led", "./led", "/abs/led", "led", "~/led", "org/../x"):
        assert split_hub_id(local) is None, local
    # An existing directory wins over the hub id it looks like; a missing non-id path is returned for the
    # loader to report (without touching the hub).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert resolve_checkpoint("org/name").resolve() == (tmp_path / "org" / "name").resolve()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LEDForConditionalGeneration.from_pretrained(str(tmp_path / "missing" / "dir"))
    with pytest.raises(ValueError, match="applies to hub ids"):
        resolve_checkpoint("org/name", revision="v1")


def test_online_downloads_only_the_files_the_model_needs(hf_cache, summarizer_checkpoint, monkeypatch):
    """The online path with the hub's answers replaced: which files it asks snapshot_download for."""
    import huggingface_hub

    repo_files = ["config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5",
                  "flax_model.msgpack", "vocab.json", "merges.txt", "tokenizer_config.json", "README.md",
                  "onnx/model.safetensors", "modeling_custom.py"]
    requested = []

    def fake_snapshot_download(repo_id, *, revision, allow_patterns):
        requested.append((repo_id, revision, sorted(allow_patterns)))
        files = [f for f in allow_patterns if f != "pytorch_model.bin" and (summarizer_checkpoint / f).exists()]
        commit = write_hub_cache(hf_cache, repo_id, summarizer_checkpoint, revision=revision, files=files)
        return str(hf_cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, revision: repo_files)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = LEDForConditionalGeneration.from_pretrained(REPO)
    assert requested == [(REPO, "main", ["config.json", "generation_config.json", "model.safetensors"])]
    assert torch.equal(_logits(model), _logits(LEDForConditionalGeneration.from_pretrained(summarizer_checkpoint)))
    LEDTokenizer.from_pretrained(REPO + "@v1")
    assert requested[1] == (REPO, "v1", ["merges.txt", "tokenizer_config.json", "vocab.json"])

    # No safetensors: the pickled weights (read with weights_only) are the ones fetched.
    assert select_files(["config.json", "pytorch_model.bin", "flax_model.msgpack"], ("config", "weights")) == [
        "config.json", "pytorch_model.bin"]
    shards = ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
              "pytorch_model.bin"]
    assert select_files(shards, ("weights",)) == shards[:3]


def test_unreachable_hub_falls_back_to_the_cache(cached_repo, summarizer_checkpoint, monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    model = LEDForConditionalGeneration.from_pretrained(REPO)
    assert torch.equal(_logits(model), _logits(LEDForConditionalGeneration.from_pretrained(summarizer_checkpoint)))
    with pytest.raises(CheckpointNotFound, match="could not be reached .*network is unreachable"):
        LEDForConditionalGeneration.from_pretrained("other-org/not-cached")


def test_apply_command_with_a_hub_id_checkpoint(cached_repo, summarizer_checkpoint, tmp_path, capsys):
    from spacy_led import cli

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in (LONG_TEXT, "The court ruled. Both agreed.")))
    settings = ["--task", "summarize", "--component-config", json.dumps({"max_summary_length": 8}), "--no-progress"]
    assert cli.main(["apply", "--checkpoint", str(summarizer_checkpoint), *settings, str(source),
                     str(tmp_path / "dir.jsonl")]) == 0
    assert cli.main(["apply", "--checkpoint", REPO, "--revision", "main", *settings, str(source),
                     str(tmp_path / "hub.jsonl")]) == 0
    expected = (tmp_path / "dir.jsonl").read_text()
    assert len(expected.splitlines()) == 2 and all(json.loads(line)["summary"] for line in expected.splitlines())
    assert (tmp_path / "hub.jsonl").read_text() == expected

    capsys.readouterr()
    assert cli.main(["apply", "--checkpoint", REPO + "@v9", *settings, str(source), str(tmp_path / "v9.jsonl")]) == 2
    assert "revision 'v9'" in capsys.readouterr().err and not (tmp_path / "v9.jsonl").exists()
