"""The example project (project/): its `ci` workflow runs end to end (data -> three trained components ->
evaluation against untrained ones -> one assembled, packaged pipeline), its bundled sample is what its
generator writes, its converters read the public datasets' release formats, and its README's generated
part is current.

The workflow runs in a temporary copy of project/, with the current interpreter, through weasel's CLI exactly
as a user runs it (`python -m weasel run ci`, the same as `spacy project run ci`): the `ci` workflow runs
`all` with tiny vars overrides (short documents, tiny models, a few dozen steps), enough for every component
to score better than its untrained self on the held-out documents.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent / "project"
SCRIPTS = PROJECT / "scripts"
# Outputs of earlier runs that must not leak into the copy.
GENERATED = ("assets", "corpus", "training", "metrics", "packages", "project.lock")
COMPONENTS = ("summarizer", "classifier", "qa")
# How much better than untrained the ci workflow's trained components must score (0..1 scale).
MIN_GAIN = 0.05
METRIC_KEYS = {
    "summarizer": {"summary_rouge1_f", "summary_rouge2_f", "summary_rougeL_f", "summary_rougeLsum_f"},
    "classifier": {"accuracy", "cats_macro_f"},
    "qa": {"qa_exact_match", "qa_f1"},
}


def _env():
    env = dict(os.environ)
    # One torch thread per process: the subprocesses' speed then does not collapse when other processes
    # (e.g. parallel test runs) compete for the same cores, which OpenMP's spinning threads make very costly.
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args, cwd, timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def ci_project(tmp_path_factory):
    """A copy of project/ after `python -m weasel run ci`."""
    root = tmp_path_factory.mktemp("project") / "project"
    shutil.copytree(PROJECT, root, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    # a few CPU minutes; the timeout only guards against a hang, on a machine shared with other jobs
    result = _run(["-m", "weasel", "run", "ci", str(root)], cwd=root, timeout=1800)
    return root, result.stdout


def test_ci_workflow_trains_the_three_components(ci_project):
    root, _ = ci_project
    for component in COMPONENTS:
        for model in ("model-best", "model-last"):
            assert (root / "training" / component / model / "config.cfg").exists(), (component, model)
    for name in ("train.jsonl", "dev.jsonl", "train-squad.json", "dev-squad.json"):
        assert (root / "corpus" / "sample" / name).exists()


def test_ci_workflow_scores_trained_and_untrained_components(ci_project):
    root, stdout = ci_project
    metrics = json.loads((root / "metrics" / "evaluation.json").read_text(encoding="utf8"))
    rows = {(row["component"], row["model"]): row for row in metrics["rows"]}
    assert set(rows) == {(c, m) for c in COMPONENTS for m in ("trained", "untrained")}
    for (component, _), row in rows.items():
        assert METRIC_KEYS[component] <= set(row), (component, sorted(row))
        for key in METRIC_KEYS[component]:
            assert isinstance(row[key], float) and 0.0 <= row[key] <= 1.0, (component, key, row[key])
        assert row["documents"] > 0
    # What the workflow is for: training helps, on held-out documents. (QA is checked for real numbers only:
    # its gain after the ci workflow's 60 steps has not been measured yet.)
    for component, key in (("summarizer", "summary_rouge1_f"), ("classifier", "accuracy")):
        trained, untrained = rows[(component, "trained")][key], rows[(component, "untrained")][key]
        assert trained > untrained + MIN_GAIN, (component, key, untrained, trained)
    assert "| component | metric | untrained | trained |" in stdout  # the printed table


def test_ci_workflow_packages_one_pipeline_of_the_three_components(ci_project, tmp_path):
    root, _ = ci_project
    sdist = root / "packages" / "en_led_pipeline-0.1.0" / "dist" / "en_led_pipeline-0.1.0.tar.gz"
    assert sdist.exists()
    meta = json.loads((root / "packages" / "en_led_pipeline-0.1.0" / "meta.json").read_text(encoding="utf8"))
    assert meta["pipeline"] == ["led_summarizer", "led_classifier", "led_qa"]
    assert any(req.startswith("spacy-led") for req in meta["requirements"])
    # The sdist installs offline (no index, no build isolation) and loads as a Python package.
    site = tmp_path / "site"
    _run(["-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
          "--target", str(site), str(sdist)], cwd=tmp_path, timeout=300)
    script = (
        "import json, en_led_pipeline\n"
        "nlp = en_led_pipeline.load()\n"
        "doc = nlp.make_doc('Supply agreement between Norvale Foods and Luma Systems. The customer shall pay an '\n"
        "                   'annual fee of $12.5 million, invoiced quarterly in arrears.')\n"
        "doc._.questions = ['What is the annual fee?']\n"
        "doc = nlp(doc)\n"
        "print(json.dumps({'pipeline': nlp.pipe_names, 'summary': doc._.summary, 'cats': sorted(doc.cats),\n"
        "                  'questions': sorted(doc._.answers)}))\n"
    )
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["pipeline"] == ["led_summarizer", "led_classifier", "led_qa"]
    assert isinstance(out["summary"], str)
    assert out["cats"] == ["CONTRACT", "FINANCE", "INCIDENT", "RESEARCH"]
    assert out["questions"] == ["What is the annual fee?"]


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_bundled_sample_is_the_generators_output(tmp_path):
    _run([str(SCRIPTS / "make_sample.py"), str(tmp_path), "--train", "90", "--dev", "15", "--seed", "13"],
         cwd=PROJECT)
    for name in ("train.jsonl", "dev.jsonl"):
        assert _md5(tmp_path / name) == _md5(PROJECT / "sample" / name), f"sample/{name} differs from make_sample.py's output"
    assert sum(p.stat().st_size for p in (PROJECT / "sample").iterdir()) < 2_000_000


def _records(name):
    return [json.loads(line) for line in (PROJECT / "sample" / name).read_text(encoding="utf8").splitlines()]


def test_bundled_sample_has_summaries_labels_and_answerable_and_unanswerable_questions():
    records = _records("dev.jsonl")
    assert {r["labels"] for r in records} == {"CONTRACT", "FINANCE", "INCIDENT", "RESEARCH"}
    assert all(r["summary"] and len(r["text"].split()) >= 150 for r in records)
    for name in ("dev.jsonl", "wikipedia-dev.jsonl"):
        questions = [qa for r in _records(name) for qa in r["qas"]]
        assert any(qa["is_impossible"] for qa in questions) and not all(qa["is_impossible"] for qa in questions)
    for name in ("train.jsonl", "dev.jsonl", "wikipedia-train.jsonl", "wikipedia-dev.jsonl"):
        for r in _records(name):
            for qa in r["qas"]:
                for answer in qa["answers"]:
                    start = answer["answer_start"]
                    assert r["text"][start : start + len(answer["text"])] == answer["text"], (name, qa["id"])


def test_a_third_of_the_sample_is_long_with_answers_past_the_decoder_positions():
    """Read with the tokenizer the project learns (a 2,000-piece BPE of the training texts): at least a third of
    the documents of each split run 2,000-8,000 pieces, and answers sit past position 1,024 in both splits."""
    from spacy_led.tokenizer import LEDTokenizer

    splits = {split: _records(f"{split}.jsonl") + _records(f"wikipedia-{split}.jsonl") for split in ("train", "dev")}
    tokenizer = LEDTokenizer.train([r["text"] for r in splits["train"]], 2000)
    for split, records in splits.items():
        encodings = [tokenizer.encode_with_offsets(r["text"], add_special_tokens=False) for r in records]
        long = sum(2000 <= len(e.ids) <= 8000 for e in encodings)
        assert 3 * long >= len(records), (split, long, len(records))
        answer_pieces = [
            sum(1 for start, _ in e.offsets if start < qa["answers"][0]["answer_start"])
            for r, e in zip(records, encodings, strict=True)
            for qa in r["qas"]
            if qa["answers"]
        ]
        assert sum(piece > 1024 for piece in answer_pieces) >= 10, split
        assert max(answer_pieces) > 2000, split


def test_convert_squad_articles_makes_long_documents_with_questions_throughout(tmp_path):
    def article(title, n):
        paragraphs = []
        for i in range(n):
            context = f"Paragraph {i} of {title} says that item {i} weighs {i + 1} kilograms."
            paragraphs.append({"context": context, "qas": [
                {"id": f"{title}-{i}", "question": f"How much does item {i} weigh?", "is_impossible": False,
                 "answers": [{"text": f"{i + 1} kilograms", "answer_start": context.index(f"{i + 1} kilo")}] * 2},
                {"id": f"{title}-{i}-x", "question": f"Who made item {i}?", "is_impossible": True, "answers": []},
            ]})
        return {"title": title, "paragraphs": paragraphs}

    source = tmp_path / "squad.json"
    source.write_text(json.dumps({"version": "v2.0", "data": [article("Alpha_one", 9), article("Beta", 3)]}))
    _run([str(SCRIPTS / "convert_squad_articles.py"), str(source), str(tmp_path), "--dev-articles", "1",
          "--max-words", "70", "--questions", "4"], cwd=tmp_path)
    (train,) = [json.loads(line) for line in (tmp_path / "wikipedia-train.jsonl").read_text().splitlines()]
    (dev,) = [json.loads(line) for line in (tmp_path / "wikipedia-dev.jsonl").read_text().splitlines()]
    assert dev["id"] == "wiki-Beta"
    # 11 words per paragraph: 6 paragraphs fit in 70 words, after the title with underscores as spaces
    assert train["text"].startswith("Alpha one\n\nParagraph 0 of Alpha_one")
    assert train["text"].count("Paragraph") == 6
    # 3 answerable questions spread from the first to the last kept paragraph, 1 unanswerable (the middle one of
    # the kept paragraphs), answers moved
    assert [qa["id"] for qa in train["qas"]] == ["Alpha_one-0", "Alpha_one-2", "Alpha_one-5", "Alpha_one-3-x"]
    for qa in train["qas"][:3]:
        (answer,) = qa["answers"]  # the repeated gold answer is kept once
        assert train["text"][answer["answer_start"]:].startswith(answer["text"])
    assert train["qas"][3]["is_impossible"] and train["qas"][3]["answers"] == []


def test_convert_cohan_reads_the_release_format_from_the_zip(tmp_path):
    """A tiny archive laid out like arxiv-dataset.zip (one JSON paper per line, <S> markers in abstracts)."""
    papers = {
        "train.txt": [
            {"article_id": "1", "abstract_text": ["<S> we study long documents . </S>", "<S> it works . </S>"],
             "article_text": ["long documents are long .", "we read them all ."], "section_names": ["intro"],
             "sections": [["long documents are long ."]]},
            {"article_id": "2", "abstract_text": [], "article_text": ["no abstract here ."],
             "section_names": [], "sections": []},
        ],
        "val.txt": [{"article_id": "3", "abstract_text": ["<S> a dev paper . </S>"], "article_text": ["dev text ."],
                     "section_names": [], "sections": []}],
        "test.txt": [],
    }
    archive = tmp_path / "arxiv-dataset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, lines in papers.items():
            z.writestr(f"arxiv-dataset/{name}", "".join(json.dumps(p) + "\n" for p in lines))
    out = tmp_path / "corpus"
    result = _run([str(SCRIPTS / "convert_cohan.py"), str(archive), str(out)], cwd=tmp_path)
    assert "train: 1 papers written, 1 skipped" in result.stdout
    train = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf8").splitlines()]
    assert train == [{"id": "1", "text": "long documents are long .\nwe read them all .",
                      "summary": "we study long documents . it works ."}]
    # The project's reader takes the converted file as it is.
    import spacy
    from spacy_led.corpus import SummaryCorpus

    examples = list(SummaryCorpus(out / "dev.jsonl")(spacy.blank("en")))
    assert [eg.reference._.summary for eg in examples] == ["a dev paper ."]


def test_convert_qasper_reads_the_release_format_from_the_tgz(tmp_path):
    """A tiny archive laid out like qasper-train-dev-v0.3.tgz."""

    def answer(spans=(), unanswerable=False, yes_no=None, free_form=""):
        return {"answer": {"unanswerable": unanswerable, "extractive_spans": list(spans), "yes_no": yes_no,
                           "free_form_answer": free_form, "evidence": [], "highlighted_evidence": []},
                "annotation_id": "a", "worker_id": "w"}

    paper = {
        "title": "A Tiny Paper", "abstract": "We train on 5,000 documents.",
        "full_text": [{"section_name": "Method", "paragraphs": ["We use BERT as the encoder.", ""]}],
        "qas": [
            {"question": "Which encoder is used?", "question_id": "q1",
             "answers": [answer(["BERT"]), answer(["BERT as the encoder"])]},
            {"question": "Who funded it?", "question_id": "q2", "answers": [answer(unanswerable=True)]},
            {"question": "Is it good?", "question_id": "q3", "answers": [answer(yes_no=True)]},
            {"question": "What is new?", "question_id": "q4", "answers": [answer(free_form="everything")]},
        ],
    }
    archive = tmp_path / "qasper-train-dev-v0.3.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("qasper-train-v0.3.json", {"p1": paper}), ("qasper-dev-v0.3.json", {"p2": paper})):
            payload = json.dumps(data).encode("utf8")
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "corpus"
    _run([str(SCRIPTS / "convert_qasper.py"), str(archive), str(out)], cwd=tmp_path)
    squad = json.loads((out / "train-squad.json").read_text(encoding="utf8"))
    (article,) = squad["data"]
    context = article["paragraphs"][0]["context"]
    assert context == "A Tiny Paper\n\nWe train on 5,000 documents.\n\nMethod\n\nWe use BERT as the encoder."
    qas = {qa["id"]: qa for qa in article["paragraphs"][0]["qas"]}
    assert set(qas) == {"q1", "q2"}  # yes/no and free-form answers are not extractive
    assert [a["text"] for a in qas["q1"]["answers"]] == ["BERT", "BERT as the encoder"]
    assert all(context[a["answer_start"]:].startswith(a["text"]) for a in qas["q1"]["answers"])
    assert qas["q2"]["is_impossible"] and qas["q2"]["answers"] == []
    import spacy
    from spacy_led.corpus import SquadCorpus

    (example,) = list(SquadCorpus(out / "dev-squad.json")(spacy.blank("en")))
    assert example.reference._.gold_answers == {"Which encoder is used?": ["BERT", "BERT as the encoder"],
                                                "Who funded it?": []}


def test_readme_commands_section_is_what_spacy_project_document_writes(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(PROJECT / "README.md", readme)
    _run(["-m", "spacy", "project", "document", str(PROJECT), "--output", str(readme)], cwd=tmp_path)
    assert readme.read_text(encoding="utf8") == (PROJECT / "README.md").read_text(encoding="utf8"), (
        "project/README.md is out of date: run `python -m spacy project document project --output project/README.md`"
    )
