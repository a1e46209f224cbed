"""The ``spacy-led`` command line on tiny checkpoints: each task's record, usage errors with exit status 2, the
journal's repair of a torn line, and the installed command. The behaviour shared by every executor (order,
errors, resume after a kill, input kinds) is in test_apply.py."""
import json
import sys
from pathlib import Path

import pytest
import spacy

from spacy_led import cli

from conftest import LONG_TEXT, SAMPLE_TEXTS

TEXTS = [*SAMPLE_TEXTS, ""]
FAST = json.dumps({"num_beams": 1, "max_summary_length": 8})


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf8")
    return path


def read_jsonl_bytes(data: bytes):
    return [json.loads(line) for line in data.splitlines()]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf8").splitlines()]


def summarize_args(checkpoint, *paths, extra=()):
    return ["apply", "--checkpoint", str(checkpoint), "--task", "summarize", "--component-config", FAST,
            "--no-progress", *extra, *map(str, paths)]


def test_saved_pipeline_classify(classifier_checkpoint, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint)})
    nlp.to_disk(tmp_path / "pipeline")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(TEXTS[:3])])
    out = tmp_path / "out.jsonl"
    assert cli.main(["apply", str(tmp_path / "pipeline"), str(src), str(out), "--no-progress"]) == 0
    records = read_jsonl(out)
    for record, text in zip(records, TEXTS[:3], strict=True):
        doc = nlp(text)
        assert record["cats"] == pytest.approx(doc.cats, abs=1e-6) and record["label"] == doc._.label
    assert [r["id"] for r in records] == [0, 1, 2]


def test_qa_questions_from_option_and_record(qa_checkpoint, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": LONG_TEXT}, {"text": LONG_TEXT, "questions": ["Where was the meeting?"]}])
    out = tmp_path / "out.jsonl"
    args = ["apply", "--checkpoint", str(qa_checkpoint), "--task", "qa", "--question", "Who signed first?",
            "--component-config", json.dumps({"no_answer_threshold": None}), "--no-progress", str(src), str(out)]
    assert cli.main(args) == 0
    first, second = read_jsonl(out)
    assert [a["question"] for a in first["answers"]] == ["Who signed first?"]
    assert [a["question"] for a in second["answers"]] == ["Where was the meeting?"]
    for answer in first["answers"] + second["answers"]:
        assert LONG_TEXT[answer["start_char"]:answer["end_char"]] == answer["text"] and answer["text"]
        assert 0 < answer["score"] <= 1


def test_a_torn_last_line_is_truncated_and_redone(summarizer_checkpoint, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.jsonl"
    args = summarize_args(summarizer_checkpoint, src, out, extra=["--batch-size", "2"])
    assert cli.main(args) == 0
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:7])  # killed in the middle of the 4th record
    assert cli.main(args) == 0
    resumed = out.read_bytes()
    assert resumed.startswith(b"".join(lines[:3]))  # the finished records are kept as they were
    # The redone records ran in other batches (3+4, then 5 alone, where the whole run had 2+3 and 4+5): the
    # same records, once each, in order; the scores equal to float32 rounding (a document padded in a batch
    # gets its encoder's global-token sums in another order than alone).
    before, after = read_jsonl_bytes(complete), read_jsonl_bytes(resumed)
    assert [r["id"] for r in after] == [r["id"] for r in before] == list(range(1, len(TEXTS) + 1))
    assert [r["summary"] for r in after] == [r["summary"] for r in before]
    for new, old in zip(after, before, strict=True):
        assert (new["summary_score"] is None) == (old["summary_score"] is None)
        if old["summary_score"] is not None:
            assert new["summary_score"] == pytest.approx(old["summary_score"], rel=1e-5)


def test_usage_errors_exit_2(summarizer_checkpoint, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert cli.main(["apply", "--checkpoint", str(summarizer_checkpoint), str(src), str(tmp_path / "o.jsonl")]) == 2
    assert "--task" in capsys.readouterr().err
    assert cli.main(summarize_args(summarizer_checkpoint, tmp_path / "missing.jsonl", tmp_path / "o.jsonl")) == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["apply", str(src), str(tmp_path / "o.jsonl")])  # MODEL missing
    assert exit_info.value.code == 2
    assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path / "o.jsonl", extra=["--merge", "m.jsonl"])) == 2
    assert "--merge joins the part files of a --ray run" in capsys.readouterr().err
    assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path)) == 2  # OUTPUT is a directory
    assert "is a directory" in capsys.readouterr().err
    assert cli.main(["merge", str(tmp_path), str(tmp_path / "m.jsonl")]) == 2
    assert "not the output directory of `spacy-led apply --ray`" in capsys.readouterr().err
    (tmp_path / "manifest.jsonl").write_text("")  # a run that has not finished
    assert cli.main(["merge", str(tmp_path), str(tmp_path / "m.jsonl")]) == 2
    assert "has not finished" in capsys.readouterr().err and not (tmp_path / "m.jsonl").exists()
    import torch

    if not torch.cuda.is_available():
        assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path / "o.jsonl", extra=["--gpu-id", "0"])) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_ray_option_without_ray_says_how_to_install(summarizer_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path / "o", extra=["--ray", "local"])) == 2
    assert 'pip install "spacy-led[ray]"' in capsys.readouterr().err


def test_console_script_is_installed():
    """`pip install` puts the `spacy-led` command beside the interpreter (setup.cfg console_scripts)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "spacy-led"
    assert script.is_file(), "reinstall the package: pip install -e ."
    result = subprocess.run([str(script), "apply", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--checkpoint" in result.stdout
