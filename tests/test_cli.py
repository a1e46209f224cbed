"""``spacy-led apply`` on tiny checkpoints: each input kind, each task, errors to the errors file with exit
status 1, usage errors with 2, and a run killed by SIGKILL then resumed gives exactly the uninterrupted output."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_led import cli

from conftest import LONG_TEXT

TEXTS = [
    "The court reviewed the contract. Both parties agreed.",
    "Witnesses described the café meeting in Zürich;  one said 東京 twice. 😀",
    "Short.",
    LONG_TEXT,
    "Hello world! The quick brown fox jumps over the lazy dog. Was it quick?",
    "",
]
FAST = json.dumps({"num_beams": 1, "max_summary_length": 8})


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf8").splitlines()]


@pytest.fixture(scope="module")
def reference_nlp(summarizer_checkpoint):
    return cli.load_pipeline(None, str(summarizer_checkpoint), "summarize", json.loads(FAST))


def summarize_args(checkpoint, *paths, extra=()):
    return ["apply", "--checkpoint", str(checkpoint), "--task", "summarize", "--component-config", FAST,
            "--no-progress", *extra, *map(str, paths)]


def test_jsonl_input_gives_one_record_per_document_in_order(summarizer_checkpoint, reference_nlp, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:3]] + [{"id": "x", "text": TEXTS[4]}])
    out = tmp_path / "out.jsonl"
    code = cli.main(summarize_args(summarizer_checkpoint, src, out,
                                   extra=["--batch-size", "2", "--batch-token-budget", "150",
                                          "--spacy-output", str(tmp_path / "out.spacy")]))
    assert code == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [1, 2, 3, "x"]  # default id: the line number
    expected = [reference_nlp(t)._.summary for t in TEXTS[:3] + [TEXTS[4]]]
    assert [r["summary"] for r in records] == expected and all(expected)
    assert not (tmp_path / "out.jsonl.errors.jsonl").read_text()
    err = capsys.readouterr().err
    assert "4 documents done" in err and "0 failed" in err and "0 skipped" in err
    docs = list(DocBin().from_disk(tmp_path / "out.spacy").get_docs(reference_nlp.vocab))
    assert [d.text for d in docs] == TEXTS[:3] + [TEXTS[4]]
    assert [d._.summary for d in docs] == expected and docs[3].user_data["spacy_led.id"] == "x"
    assert not (tmp_path / "out.spacy.parts").exists()
    # running the finished command again does nothing twice
    assert cli.main(summarize_args(summarizer_checkpoint, src, out, extra=["--spacy-output", str(tmp_path / "out.spacy")])) == 0
    assert read_jsonl(out) == records
    assert "0 documents done" in capsys.readouterr().err and len(DocBin().from_disk(tmp_path / "out.spacy")) == 4


def test_txt_folder_ids_are_file_names_and_undecodable_files_fail(summarizer_checkpoint, reference_nlp, tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text(TEXTS[0], encoding="utf8")
    (folder / "a.txt").write_text(TEXTS[1], encoding="utf8")
    (folder / "sub" / "c.txt").write_text(TEXTS[2], encoding="utf8")
    (folder / "bad.txt").write_bytes(b"caf\xe9 latin-1 \xff")
    out = tmp_path / "out.jsonl"
    assert cli.main(summarize_args(summarizer_checkpoint, folder, out)) == 1
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["a.txt", "b.txt", "sub/c.txt"]
    assert [r["summary"] for r in records] == [reference_nlp(t)._.summary for t in (TEXTS[1], TEXTS[0], TEXTS[2])]
    (error,) = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert error["id"] == "bad.txt" and error["position"] == "bad.txt" and "UTF-8" in error["reason"]


def test_spacy_input_ids_are_file_and_index(summarizer_checkpoint, reference_nlp, tmp_path):
    nlp = spacy.blank("en")
    DocBin(docs=[nlp(t) for t in TEXTS[:2]]).to_disk(tmp_path / "one.spacy")
    out = tmp_path / "out.jsonl"
    assert cli.main(summarize_args(summarizer_checkpoint, tmp_path / "one.spacy", out)) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["one.spacy:0", "one.spacy:1"]
    assert [r["summary"] for r in records] == [reference_nlp(t)._.summary for t in TEXTS[:2]]


def test_saved_pipeline_classify(classifier_checkpoint, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("led_classifier", config={"checkpoint": str(classifier_checkpoint)})
    nlp.to_disk(tmp_path / "pipeline")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(TEXTS[:3])])
    out = tmp_path / "out.jsonl"
    assert cli.main(["apply", str(tmp_path / "pipeline"), str(src), str(out), "--no-progress"]) == 0
    records = read_jsonl(out)
    for record, text in zip(records, TEXTS[:3]):
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


def test_bad_records_go_to_the_errors_file_and_the_rest_runs(summarizer_checkpoint, reference_nlp, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        json.dumps({"text": TEXTS[0]}).encode() + b"\n"
        + b'{"text": "unterminated\n'
        + b"\n"  # blank lines are not documents
        + b"[1, 2]\n"
        + json.dumps({"id": "long", "text": LONG_TEXT}).encode() + b"\n"
        + b'{"text": "caf\xe9"}\n'
        + json.dumps({"id": "notext"}).encode() + b"\n"
        + json.dumps({"id": "dup", "text": TEXTS[1]}).encode() + b"\n"
        + json.dumps({"id": "dup", "text": TEXTS[2]}).encode() + b"\n"
        + json.dumps({"text": TEXTS[4]}).encode() + b"\n"
    )
    out, errors = tmp_path / "out.jsonl", tmp_path / "errs.jsonl"
    args = summarize_args(summarizer_checkpoint, src, out,
                          extra=["--overflow", "error", "--max-length", "100", "--errors", str(errors), "--batch-size", "3"])
    assert cli.main(args) == 1
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [1, "dup", 10]
    failures = read_jsonl(errors)
    assert [(f["id"], f["position"]) for f in failures] == [
        (2, "line 2"), (4, "line 4"), ("long", "line 5"), (6, "line 6"), ("notext", "line 7"), ("dup", "line 9")]
    reasons = [f["reason"] for f in failures]
    assert "malformed JSON" in reasons[0] and "JSON object" in reasons[1] and "DocumentTooLong" in reasons[2]
    assert "UTF-8" in reasons[3] and "no 'text' field" in reasons[4] and "duplicate id" in reasons[5]
    # a second run skips everything, failures included, and still reports them
    before = (out.read_bytes(), errors.read_bytes())
    assert cli.main(args) == 1
    assert (out.read_bytes(), errors.read_bytes()) == before
    err = capsys.readouterr().err
    assert "9 skipped" in err and "FAILED" in err


def test_a_torn_last_line_is_truncated_and_redone(summarizer_checkpoint, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.jsonl"
    args = summarize_args(summarizer_checkpoint, src, out, extra=["--batch-size", "2"])
    assert cli.main(args) == 0
    complete = out.read_bytes()
    lines = complete.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:7])  # killed in the middle of the 4th record
    assert cli.main(args) == 0
    assert out.read_bytes() == complete


def test_usage_errors_exit_2(summarizer_checkpoint, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert cli.main(["apply", "--checkpoint", str(summarizer_checkpoint), str(src), str(tmp_path / "o.jsonl")]) == 2
    assert "--task" in capsys.readouterr().err
    assert cli.main(summarize_args(summarizer_checkpoint, tmp_path / "missing.jsonl", tmp_path / "o.jsonl")) == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["apply", str(src), str(tmp_path / "o.jsonl")])  # MODEL missing
    assert exit_info.value.code == 2
    import torch

    if not torch.cuda.is_available():
        assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path / "o.jsonl", extra=["--gpu-id", "0"])) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_killed_run_resumes_to_the_uninterrupted_output(summarizer_checkpoint, reference_nlp, tmp_path):
    n = 60
    texts = [f"{TEXTS[i % 5]} Document number {i}." for i in range(n)]
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "spacy_led", *summarize_args(summarizer_checkpoint, src, out,
                                                                 extra=["--batch-size", "2"])]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    partial = read_jsonl(out) if out.read_bytes().endswith(b"\n") else None
    written = out.read_bytes().count(b"\n")
    assert 2 <= written < n, written  # killed in the middle
    if partial is not None:
        assert [r["id"] for r in partial] == [f"d{i}" for i in range(len(partial))]
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{n - written} documents done" in resumed.stderr or "skipped" in resumed.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [f"d{i}" for i in range(n)]  # all of them, once, in order
    assert [r["summary"] for r in records] == [d._.summary for d in reference_nlp.pipe(texts)]


def test_ray_option_without_ray_says_how_to_install(summarizer_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    assert cli.main(summarize_args(summarizer_checkpoint, src, tmp_path / "o.jsonl", extra=["--ray", "local"])) == 2
    assert 'pip install "spacy-led[ray]"' in capsys.readouterr().err


def test_ray_run_equals_the_local_run(summarizer_checkpoint, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'spacy-led[ray]')")
    pytest.importorskip("ray.data", reason="ray[data] is not installed")
    try:
        ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"a local Ray cluster cannot start here: {err}")
    try:
        src = tmp_path / "in.jsonl"
        src.write_bytes(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in TEXTS) + b"{broken\n")
        local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
        assert cli.main(summarize_args(summarizer_checkpoint, src, local_out, extra=["--batch-size", "2"])) == 1
        assert cli.main(summarize_args(summarizer_checkpoint, src, ray_out,
                                       extra=["--batch-size", "2", "--ray", "auto"])) == 1
        assert read_jsonl(ray_out) == read_jsonl(local_out)
        assert read_jsonl(tmp_path / "ray.jsonl.errors.jsonl") == read_jsonl(tmp_path / "local.jsonl.errors.jsonl")
    finally:
        ray.shutdown()


def test_console_script_is_installed():
    """`pip install` puts the `spacy-led` command beside the interpreter (setup.cfg console_scripts)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "spacy-led"
    assert script.is_file(), "reinstall the package: pip install -e ."
    result = subprocess.run([str(script), "apply", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--checkpoint" in result.stdout
