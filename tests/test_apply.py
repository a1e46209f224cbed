"""The behaviour every executor of ``spacy-led apply`` guarantees, checked against each of them: in-process,
``--n-process 2`` and ``--ray`` (Ray Data on one local cluster shared by the module, 2 CPUs).

For ``--ray`` the output is a directory of parts; ``--merge`` joins them, and the merged file is held to the
same expectations as a local OUTPUT: the records of every document once, in input order, equal to running the
pipeline document by document; failures in the errors file with their id, position and reason; exit status 1
when any document failed; a second run of the same command does nothing twice."""
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
from spacy_led.apply import ApplyOptions, load_pipeline

from conftest import LONG_TEXT, SAMPLE_TEXTS

TESTS = Path(__file__).parent
TEXTS = [*SAMPLE_TEXTS, ""]
FAST = {"num_beams": 1, "max_summary_length": 8}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf8").splitlines()]


@pytest.fixture(scope="module")
def reference_nlp(summarizer_checkpoint):
    return load_pipeline(ApplyOptions("", "", checkpoint=str(summarizer_checkpoint), task="summarize",
                                      component_config=FAST))


@pytest.fixture(scope="module")
def ray_cluster():
    """The GCS address of a 2-CPU local Ray cluster, started once for the module (Ray starts slowly)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


class Runner:
    """Runs ``spacy-led apply`` with one executor and reads back what a user would read."""

    def __init__(self, name, ray_address=None, ray_workers=1):
        self.name = name
        self.ray_address = ray_address
        self.ray_workers = ray_workers  # one actor is enough to check records and is quicker to start

    def __repr__(self):
        return self.name

    def output(self, tmp_path, stem="out"):
        return tmp_path / (f"{stem}_parts" if self.ray_address else f"{stem}.jsonl")

    def records_path(self, out):
        return out.with_name(out.name + ".merged.jsonl") if self.ray_address else out

    def errors_path(self, out):
        return Path(str(self.records_path(out)) + ".errors.jsonl")

    def options(self, out):
        if self.ray_address:
            return ["--ray", self.ray_address, "--n-process", str(self.ray_workers), "--merge",
                    str(self.records_path(out))]
        return ["--n-process", "2"] if self.name == "n_process" else []

    def args(self, model_args, src, out, extra=(), model=None):
        paths = [str(p) for p in (model, src, out) if p is not None]
        return ["apply", *model_args, "--no-progress", *self.options(out), *extra, *paths]

    def records(self, out):
        return read_jsonl(self.records_path(out))

    def errors(self, out):
        return read_jsonl(self.errors_path(out))


@pytest.fixture(params=["in-process", "n_process", "ray"])
def runner(request):
    if request.param == "ray":
        return Runner("ray", request.getfixturevalue("ray_cluster"))
    return Runner(request.param)


def summarizer_args(checkpoint):
    return ["--checkpoint", str(checkpoint), "--task", "summarize", "--component-config", json.dumps(FAST)]


def test_records_in_input_order_with_docbin_and_summary(runner, summarizer_checkpoint, reference_nlp, tmp_path,
                                                        capsys):
    texts = TEXTS[:3] + [TEXTS[4]]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts[:3]] + [{"id": "x", "text": texts[3]}])
    out, docbin = runner.output(tmp_path), tmp_path / "out.spacy"
    args = runner.args(summarizer_args(summarizer_checkpoint), src, out,
                       extra=["--batch-size", "2", "--batch-token-budget", "150", "--spacy-output", str(docbin),
                              "--part-size", "2"])
    assert cli.main(args) == 0
    records = runner.records(out)
    assert [r["id"] for r in records] == [1, 2, 3, "x"]  # default id: the line number
    expected = [reference_nlp(t)._.summary for t in texts]
    assert [r["summary"] for r in records] == expected and all(expected)
    scores = [reference_nlp(t)._.summary_score for t in texts]
    assert [r["summary_score"] for r in records] == pytest.approx(scores, rel=1e-5)  # batched vs one by one
    assert runner.errors(out) == []
    err = capsys.readouterr().err
    assert "4 documents done" in err and "0 failed" in err and "0 skipped" in err
    docs = list(DocBin().from_disk(docbin).get_docs(reference_nlp.vocab))
    assert [d.text for d in docs] == texts
    assert [d._.summary for d in docs] == expected and docs[3].user_data["spacy_led.id"] == "x"
    # running the finished command again does nothing twice
    assert cli.main(args) == 0
    assert runner.records(out) == records
    err = capsys.readouterr().err
    assert "0 documents done" in err and "4 skipped" in err
    assert len(DocBin().from_disk(docbin)) == 4


def test_bad_records_go_to_the_errors_and_the_rest_runs(runner, summarizer_checkpoint, tmp_path, capsys):
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
    out = runner.output(tmp_path)
    args = runner.args(summarizer_args(summarizer_checkpoint), src, out,
                       extra=["--overflow", "error", "--max-length", "100", "--batch-size", "3"])
    assert cli.main(args) == 1
    assert [r["id"] for r in runner.records(out)] == [1, "dup", 10]
    failures = runner.errors(out)
    assert [(f["id"], f["position"]) for f in failures] == [
        (2, "line 2"), (4, "line 4"), ("long", "line 5"), (6, "line 6"), ("notext", "line 7"), ("dup", "line 9")]
    reasons = [f["reason"] for f in failures]
    assert "malformed JSON" in reasons[0] and "JSON object" in reasons[1] and "DocumentTooLong" in reasons[2]
    assert "UTF-8" in reasons[3] and "no 'text' field" in reasons[4] and "duplicate id" in reasons[5]
    assert "3 documents done" in capsys.readouterr().err
    # a second run skips everything, failures included, still reports them and exits 1
    before = (runner.records(out), failures)
    assert cli.main(args) == 1
    assert (runner.records(out), runner.errors(out)) == before
    err = capsys.readouterr().err
    assert "0 documents done" in err and "9 skipped" in err and "6 of them failed" in err and "FAILED" in err


def test_txt_folder_ids_are_file_names_and_bad_files_fail(runner, summarizer_checkpoint, reference_nlp, tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text(TEXTS[0], encoding="utf8")
    (folder / "a.txt").write_text(TEXTS[1], encoding="utf8")
    (folder / "sub" / "c.txt").write_text(TEXTS[2], encoding="utf8")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "bad.txt").write_bytes(b"caf\xe9 latin-1 \xff")
    out = runner.output(tmp_path)
    assert cli.main(runner.args(summarizer_args(summarizer_checkpoint), folder, out)) == 1
    records = runner.records(out)
    assert [r["id"] for r in records] == ["a.txt", "b.txt", "empty.txt", "sub/c.txt"]
    expected = [reference_nlp(t)._.summary for t in (TEXTS[1], TEXTS[0], "", TEXTS[2])]
    assert [r["summary"] for r in records] == expected and expected[2] == ""
    (error,) = runner.errors(out)
    assert error["id"] == "bad.txt" and error["position"] == "bad.txt" and "UTF-8" in error["reason"]


def test_spacy_input_ids_are_file_and_index_and_a_broken_file_fails(runner, summarizer_checkpoint, reference_nlp,
                                                                   tmp_path):
    folder = tmp_path / "docbins"
    folder.mkdir()
    nlp = spacy.blank("en")
    DocBin(docs=[nlp(t) for t in TEXTS[:2]]).to_disk(folder / "one.spacy")
    DocBin(docs=[nlp(TEXTS[4])]).to_disk(folder / "two.spacy")
    (folder / "broken.spacy").write_bytes(b"not a DocBin")
    out = runner.output(tmp_path)
    assert cli.main(runner.args(summarizer_args(summarizer_checkpoint), folder, out)) == 1
    records = runner.records(out)
    assert [r["id"] for r in records] == ["one.spacy:0", "one.spacy:1", "two.spacy:0"]
    assert [r["summary"] for r in records] == [reference_nlp(t)._.summary for t in (TEXTS[0], TEXTS[1], TEXTS[4])]
    (error,) = runner.errors(out)
    assert error["id"] == "broken.spacy:*" and "cannot read DocBin" in error["reason"]


def paused_pipeline(checkpoint, path, gate):
    """A saved pipeline that holds any document containing PAUSE while ``gate`` exists, fails on any document
    containing FAIL, and summarizes the others."""
    sys.path.insert(0, str(TESTS))
    import apply_components  # noqa: F401 - registers pause_gate and fail_marker

    nlp = spacy.blank("en")
    nlp.add_pipe("pause_gate", config={"gate": str(gate)})
    nlp.add_pipe("fail_marker")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(checkpoint), **FAST})
    nlp.to_disk(path)
    return nlp


def test_killed_run_resumes_to_every_document_exactly_once(runner, summarizer_checkpoint, tmp_path):
    """The run is killed (SIGKILL: the driver and, locally, its workers) while it is held on document 8 of 16,
    after it has written earlier documents; the same command then finishes the job. Document 3 fails in the
    pipeline: it is an error record, once, and the others still run."""
    runner.ray_workers = 2  # the other worker goes on with the parts after the held one
    n, pause_at, fail_at, part_size = 16, 8, 3, 2
    texts = [f"{TEXTS[(0, 1, 2, 4)[i % 4]]} Document number {i}." for i in range(n)]
    texts[pause_at] = "PAUSE " + texts[pause_at]
    texts[fail_at] = "FAIL " + texts[fail_at]
    gate = tmp_path / "gate"
    gate.touch()
    nlp = paused_pipeline(summarizer_checkpoint, tmp_path / "pipeline", gate)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    out = runner.output(tmp_path)
    progress_file = out / "manifest.jsonl" if runner.ray_address else out
    args = runner.args(["--code", str(TESTS / "apply_components.py")], src, out,
                       extra=["--batch-size", "2", "--part-size", str(part_size)], model=tmp_path / "pipeline")
    command = [sys.executable, "-m", "spacy_led", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not (progress_file.exists() and progress_file.read_bytes().count(b"\n") >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()  # the gate holds it: it cannot finish
        assert time.monotonic() < deadline, "no output within 240 s"
        time.sleep(0.05)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    gate.unlink()
    if runner.ray_address:  # complete parts
        parts = read_jsonl(progress_file)
        ok_before, failed_before = sum(p["documents"] for p in parts), sum(p["failed"] for p in parts)
        assert 1 <= len(parts) < n // part_size
    else:  # complete lines
        ok_before = out.read_bytes().count(b"\n")
        errors_file = Path(str(out) + ".errors.jsonl")
        failed_before = errors_file.read_bytes().count(b"\n") if errors_file.exists() else 0
        assert 2 <= ok_before < pause_at
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr  # document 3 failed
    records = runner.records(out)
    assert [r["id"] for r in records] == [f"d{i}" for i in range(n) if i != fail_at]  # all once, in order
    expected = [d._.summary for d in nlp.pipe(t for i, t in enumerate(texts) if i != fail_at)]
    assert [r["summary"] for r in records] == expected
    (error,) = runner.errors(out)
    # a worker process of nlp.pipe(n_process=2) drops the Doc without telling the parent why
    reason = ("no result came back: a component dropped the document after an error, or its worker process died"
              if runner.name == "n_process" else "fail_marker: ValueError: this document says FAIL")
    assert error["id"] == f"d{fail_at}" and error["reason"] == reason
    assert (f"{n - 1 - ok_before} documents done" in resumed.stderr and f"{1 - failed_before} failed" in resumed.stderr
            and f"{ok_before + failed_before} skipped" in resumed.stderr), resumed.stderr


def test_ray_worker_killed_by_the_os_has_its_part_redone(ray_cluster, summarizer_checkpoint, tmp_path):
    """SIGKILL to the Ray worker holding a part: Ray restarts the actor and the part is done again, whole."""
    import threading

    n, pause_at = 8, 5
    texts = [f"{TEXTS[(0, 1, 2, 4)[i % 4]]} Document number {i}." for i in range(n)]
    texts[pause_at] = "PAUSE " + texts[pause_at]
    gate = tmp_path / "gate"
    gate.touch()
    nlp = paused_pipeline(summarizer_checkpoint, tmp_path / "pipeline", gate)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    runner = Runner("ray", ray_cluster)
    out = runner.output(tmp_path)
    args = runner.args(["--code", str(TESTS / "apply_components.py")], src, out, extra=["--part-size", "2"],
                       model=tmp_path / "pipeline")
    codes = []
    driver = threading.Thread(target=lambda: codes.append(cli.main(args)))
    driver.start()
    pid_file = gate.with_suffix(".pid")
    deadline = time.monotonic() + 240
    while not pid_file.exists():
        assert driver.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    os.kill(worker, signal.SIGKILL)
    gate.unlink()
    driver.join(timeout=300)
    assert codes == [0]
    records = runner.records(out)
    assert [r["id"] for r in records] == [f"d{i}" for i in range(n)]
    assert [r["summary"] for r in records] == [d._.summary for d in nlp.pipe(texts)]
    parts = read_jsonl(out / "manifest.jsonl")
    assert len(parts) == n // 2 and len({p["part"] for p in parts}) == n // 2


def test_ray_unreachable_address_is_a_clear_usage_error(summarizer_checkpoint, tmp_path, capsys):
    pytest.importorskip("ray.data")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    with socket_on_a_free_port() as port:  # nothing listens there once closed
        pass
    args = ["apply", *summarizer_args(summarizer_checkpoint), "--no-progress", "--ray", f"127.0.0.1:{port}",
            str(src), str(tmp_path / "out")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in err and "ray start --head" in err
    assert not (tmp_path / "out").exists()


def socket_on_a_free_port():
    import contextlib
    import socket

    @contextlib.contextmanager
    def bound():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield sock.getsockname()[1]

    return bound()
