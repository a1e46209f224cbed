"""Distributed fine-tuning on Ray Train (spacy_led.training): on a local 2-CPU Ray cluster, two workers, one of
them killed mid-run and resumed from the last Ray Train checkpoint, end with the weights of one uninterrupted
worker on the same global batches, and the outputs load into the components.

Starting Ray Train workers is slow (tens of seconds on a loaded 2-core machine), so the two Ray runs are
module fixtures shared by the tests. The rest (config checks, loss weighting, the start of every task) runs
without Ray.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from spacy_led.corpus import write_jsonl
from spacy_led.training import TrainingConfigError, load_training_config
from spacy_led.training.config import config_from_sections
from spacy_led.training.loop import StepPlan, build_pipeline, loss_units, training_examples

WORDS = ("contract supplier customer goods delivery insurance notice term party invoice payment title risk "
         "warranty defect audit report incident outage network server patient trial dose result").split()

TINY_SHAPE = dict(d_model=32, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=64,
                  attention_window=8, max_encoder_position_embeddings=128, max_decoder_position_embeddings=32,
                  dropout=0.0)


def summary_records(n: int, seed: int = 0):
    """Short documents with summaries of different lengths (so micro-batches hold different token counts)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) + "."
        summary = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
        records.append({"text": text, "summary": summary, "labels": rng.choice(["legal", "tech"])})
    return records


def sections(corpus: Path, output: Path, task: str = "summarize", **training):
    readers = {"summarize": "spacy_led.SummaryCorpus.v1", "classify": "spacy_led.LabelCorpus.v1",
               "qa": "spacy_led.SquadCorpus.v1"}
    return {
        "task": {"name": task},
        "model": {"checkpoint": None, "gradient_checkpointing": True, "vocab_size": 300, "shape": dict(TINY_SHAPE)},
        "component": {"max_length": 128},
        "corpora": {"train": {"@readers": readers[task], "path": str(corpus)}},
        "training": {"seed": 3, "batch_size": 4, "accumulation_steps": 2, "learning_rate": 0.003,
                     "warmup_steps": 1, "max_steps": 5, "checkpoint_every": 2, "max_failures": 1,
                     **training},
        "output": {"dir": str(output)},
    }


def write_cfg(path: Path, values) -> Path:
    from thinc.api import Config

    Config(values).to_disk(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
    write_jsonl(path, summary_records(14))  # 3 steps of 4 per epoch (2 dropped): 5 steps cross an epoch
    return path


# ---- without Ray ------------------------------------------------------------------------------------------
def test_cfg_json_and_yaml_configs_are_the_same_run(corpus, tmp_path):
    import srsly

    values = sections(corpus, tmp_path / "out")
    cfg = load_training_config(write_cfg(tmp_path / "run.cfg", values))
    srsly.write_json(tmp_path / "run.json", values)
    srsly.write_yaml(tmp_path / "run.yaml", values)
    assert load_training_config(tmp_path / "run.json") == cfg
    assert load_training_config(tmp_path / "run.yaml") == cfg
    assert cfg.task == "summarize" and cfg.accumulation_steps == 2 and cfg.shape["d_model"] == 32
    overridden = load_training_config(tmp_path / "run.json", {"training.batch_size": 8, "output.dir": "x"})
    assert (overridden.batch_size, overridden.output_dir) == (8, "x")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v.pop("corpora"), "corpora.train is missing"),
        (lambda v: v["task"].update(name="translate"), "'translate' is not one of summarize, classify, qa"),
        (lambda v: v["training"].update(batch_sise=4), "unknown setting training.batch_sise"),
        (lambda v: v.update(optimizer={}), "unknown section [optimizer]"),
        (lambda v: v["training"].update(learning_rate="fast"), "learning_rate must be float"),
        (lambda v: v["training"].update(accumulation_steps=0), "accumulation_steps must be at least 1"),
        (lambda v: v["corpora"].update(train="train.jsonl"), "corpora.train must be a reader block"),
    ],
)
def test_bad_configs_say_what_is_wrong(corpus, tmp_path, change, message):
    values = sections(corpus, tmp_path / "out")
    change(values)
    with pytest.raises(TrainingConfigError) as err:
        config_from_sections(values)
    assert message in str(err.value)


def test_a_batch_that_does_not_split_over_the_workers_is_refused(corpus, tmp_path):
    config = config_from_sections(sections(corpus, tmp_path / "out", batch_size=6))
    config.check_workers(1)
    config.check_workers(3)  # 6 = 3 workers x 2 accumulation steps x 1
    with pytest.raises(TrainingConfigError, match="make it a multiple of 4"):
        config.check_workers(2)


def test_step_plan_drops_the_incomplete_last_batch_and_refuses_a_too_small_corpus(corpus, tmp_path):
    config = config_from_sections(sections(corpus, tmp_path / "out", max_steps=0, epochs=2))
    plan = StepPlan.of(config, 14)
    assert (plan.steps_per_epoch, plan.total_steps) == (3, 6)
    assert StepPlan.of(config_from_sections(sections(corpus, tmp_path, max_steps=7)), 14).total_steps == 7
    with pytest.raises(TrainingConfigError, match="fewer than training.batch_size 4"):
        StepPlan.of(config, 3)


def test_weighting_micro_batch_losses_by_their_units_gives_the_whole_batch_gradient(corpus, tmp_path):
    """The rule the loop relies on: the mean loss of each micro-batch times its share of the step's target
    tokens sums to the mean over the whole batch, in value and in gradient, though the micro-batches hold
    different numbers of summary tokens (an unweighted mean of means would differ)."""
    from spacy.util import fix_random_seed

    from spacy_led.training.distributed import prepare_start

    config = config_from_sections(sections(corpus, tmp_path / "out"))
    prepare_start(config, tmp_path / "start")
    fix_random_seed(0)
    nlp = build_pipeline(config, str(tmp_path / "start"))
    pipe = nlp.get_pipe("led_summarizer")
    examples = training_examples(config, nlp)[:4]
    module = pipe.module.train()

    whole = pipe.training_batch(examples)
    module.zero_grad()
    module(**whole).loss.backward()
    expected = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}

    parts = [pipe.training_batch(examples[:1]), pipe.training_batch(examples[1:])]
    units = [loss_units("summarize", part) for part in parts]
    assert units[0] * 3 != units[1]  # otherwise weighting would not matter
    assert sum(units) == loss_units("summarize", whole)
    module.zero_grad()
    for part, n in zip(parts, units, strict=True):
        (module(**part).loss * (n / sum(units))).backward()
    got = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and len(got) > 10
    scale = max(float(g.abs().max()) for g in expected.values())
    assert scale > 0
    assert max(float((got[n] - expected[n]).abs().max()) for n in got) / scale < 1e-5


@pytest.mark.parametrize("task", ["classify", "qa"])
def test_every_task_prepares_a_start_the_workers_can_load(task, tmp_path):
    """The driver's start for classification (labels from the corpus, a head for them) and QA (SQuAD)."""
    from spacy_led.training.distributed import prepare_start

    records = summary_records(8, seed=1)
    for record in records:  # short enough for one window each
        record["text"] = " ".join(record["text"].split()[:6])
    if task == "classify":
        path = tmp_path / "labels.jsonl"
        write_jsonl(path, records)
    else:
        path = tmp_path / "squad.json"
        paragraphs = [{"context": r["text"], "qas": [{"id": str(i), "question": "What is first?",
                                                     "answers": [{"text": r["text"].split()[0], "answer_start": 0}]}]}
                      for i, r in enumerate(records)]
        path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))
    config = config_from_sections(sections(path, tmp_path / "out", task=task))
    assert prepare_start(config, tmp_path / "start") == 8
    nlp = build_pipeline(config, str(tmp_path / "start"))
    pipe = nlp.get_pipe(config.component_name)
    batch = pipe.training_batch(training_examples(config, nlp))
    if task == "classify":
        assert pipe.labels == ("legal", "tech")
        assert batch["labels"].tolist() == [["legal", "tech"].index(r["labels"]) for r in records]
    else:
        assert batch["start_positions"].shape == (8,) and bool((batch["start_positions"] > 0).all())
    assert float(pipe.module(**batch).loss) > 0


# ---- on a local Ray cluster -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'spacy-led[train]')")
    pytest.importorskip("ray.train.torch", reason="ray[train] is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_worker(ray_cluster, corpus, tmp_path_factory) -> Path:
    """An uninterrupted single-worker run, through the command line (`spacy-led train-distributed`)."""
    from spacy_led import cli

    tmp = tmp_path_factory.mktemp("one")
    config = write_cfg(tmp / "run.cfg", sections(corpus, tmp / "elsewhere"))
    assert cli.main(["train-distributed", str(config), "--num-workers", "1", "--output", str(tmp / "out")]) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def two_workers(ray_cluster, corpus, tmp_path_factory):
    """Two workers, rank 1 killed by SIGKILL after step 3 (the last checkpoint is step 2's)."""
    from spacy_led.training import train_distributed

    out = tmp_path_factory.mktemp("two")
    return train_distributed(config_from_sections(sections(corpus, out)), num_workers=2, kill_at_step=3)


def read_weights(checkpoint: Path):
    from spacy_led.modeling.checkpoint import read_state_dict

    return read_state_dict(checkpoint)


def test_two_workers_with_one_killed_mid_run_end_with_the_weights_of_one_uninterrupted_worker(
    two_workers, one_worker
):
    """Both properties in one comparison (each Ray run costs minutes on a loaded 2-core machine): the 2-worker
    run resumed from its step-2 checkpoint after the kill and still equals the uninterrupted 1-worker run on
    the same global batches (5 AdamW steps of 4 examples, 2 accumulation steps, an epoch boundary, default DDP
    settings with the first token global). A wrong global batch, loss weighting, gradient averaging, sampler
    position or optimizer/schedule state after the restart each break the equality."""
    assert two_workers.metrics["resumed_from"] == 2  # restarted from the step-2 checkpoint, step 3 done again
    assert two_workers.steps == 5
    one, two = read_weights(one_worker / "checkpoint"), read_weights(two_workers.checkpoint)
    start = read_weights(two_workers.checkpoint.parent / "initial")
    assert one.keys() == two.keys() == start.keys() and len(one) > 20
    moved = max(float((one[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # five steps of training changed the weights far beyond the tolerance
    scale = max(float(t.abs().max()) for t in one.values())
    worst = max(float((two[k] - one[k]).abs().max()) for k in one)
    assert worst / scale < 1e-5, f"max difference {worst:.3g} (scale {scale:.3g})"


def test_outputs_load_into_the_component_and_as_a_pipeline(two_workers):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("led_summarizer", config={"checkpoint": str(two_workers.checkpoint), "max_length": 128}).load()
    loaded = spacy.load(two_workers.pipeline)
    assert loaded.pipe_names == ["led_summarizer"]
    trained = read_weights(two_workers.checkpoint)
    for pipeline in (nlp, loaded):
        state = pipeline.get_pipe("led_summarizer").module.state_dict()
        assert all(torch.equal(state[name], tensor) for name, tensor in trained.items())
    text = "the supplier shall deliver the goods and the customer shall pay the invoice."
    assert loaded(text)._.summary == nlp(text)._.summary
