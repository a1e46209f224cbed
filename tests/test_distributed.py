"""Two processes with plain ``DistributedDataParallel`` train exactly as one process on the same global batch.

The processes meet as under ``torchrun``: ``env://`` rendezvous (MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE), the
gloo backend, the CPU. DDP keeps its default ``find_unused_parameters=False`` whenever every process has a
global token, which needs every parameter that took part in the forward pass to receive a gradient (a
``key_global.bias`` left at ``None`` stalls DDP's reducer and fails the second step). Without global tokens the
``*_global`` projections are unused (as in transformers), so DDP needs ``find_unused_parameters=True`` or
``static_graph=True``, as README says; both are checked too.

Each process takes half the rows of the global batch; DDP averages the two halves' gradients, which equals
the gradient of the whole batch because every loss here is a mean over equally many items per half.
"""
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from spacy_led.modeling import (
    LEDConfig,
    LEDForConditionalGeneration,
    LEDForQuestionAnswering,
    LEDForSequenceClassification,
)

from conftest import TINY, make_batch

WORLD_SIZE = 2
STEPS = 2
TOL = 1e-6
SHAPE = dict(TINY, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, classifier_dropout=0.0,
             id2label={0: "a", 1: "b", 2: "c"})

# name: (model class, global positions of the 4 rows, extra DDP arguments)
SCENARIOS = {
    "lm_first_token_global": (LEDForConditionalGeneration, ((0,),) * 4, {}),
    "qa_question_tokens_global": (LEDForQuestionAnswering, ((0, 1, 2, 3),) * 4, {}),
    "qa_many_globals_direct_path": (LEDForQuestionAnswering, (tuple(range(0, 48, 4)),) * 4, {}),
    "classification_mixed_globals": (LEDForSequenceClassification, ((0, 9), (0,), (0,), (0, 20)), {}),
    "lm_no_global_find_unused": (LEDForConditionalGeneration, ((),) * 4, {"find_unused_parameters": True}),
    "lm_no_global_static_graph": (LEDForConditionalGeneration, ((),) * 4, {"static_graph": True}),
}


def _model(scenario: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return SCENARIOS[scenario][0](LEDConfig(**SHAPE)).train()


def _batches(scenario: str):
    """Two global batches of 4 right-padded rows, with targets for the scenario's head."""
    cls, globals_, _ = SCENARIOS[scenario]
    batches = []
    for step in range(STEPS):
        ids, mask, glob = make_batch(batch=4, length=57, pad_lengths=(57, 40, 51, 33), globals_per_row=globals_,
                                     seed=step)
        batch = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        generator = torch.Generator().manual_seed(10 + step)
        if cls is LEDForConditionalGeneration:  # no ignored labels: each half has as many target tokens
            batch["labels"] = torch.randint(4, TINY["vocab_size"], (4, 11), generator=generator)
        elif cls is LEDForQuestionAnswering:
            batch["start_positions"] = torch.randint(1, 30, (4,), generator=generator)
            batch["end_positions"] = batch["start_positions"] + 2
        else:
            batch["labels"] = torch.randint(0, len(SHAPE["id2label"]), (4,), generator=generator)
        batches.append(batch)
    return batches


def _train(model: torch.nn.Module, parameters, batches, rows: slice) -> None:
    """SGD with weight decay: decay, like DDP's reducer, acts only on parameters whose gradient is not None."""
    optimizer = torch.optim.SGD(parameters, lr=0.1, weight_decay=0.01)
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model(**{name: value[rows] for name, value in batch.items()}).loss.backward()
        optimizer.step()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=120))
    try:
        rows_per_rank = 4 // WORLD_SIZE
        rows = slice(rank * rows_per_rank, (rank + 1) * rows_per_rank)
        for scenario, (_, _, ddp_options) in SCENARIOS.items():
            model = _model(scenario)
            ddp = DistributedDataParallel(model, **ddp_options)
            _train(ddp, ddp.parameters(), _batches(scenario), rows)
            torch.save(model.state_dict(), os.path.join(out_dir, f"{scenario}.rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return out_dir


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_two_ddp_processes_equal_one_process_on_the_global_batch(distributed_results, scenario):
    single = _model(scenario)
    initial = {name: value.clone() for name, value in single.state_dict().items()}
    _train(single, single.parameters(), _batches(scenario), slice(None))
    expected = single.state_dict()
    moved = 0
    for rank in range(WORLD_SIZE):
        trained = torch.load(distributed_results / f"{scenario}.rank{rank}.pt", weights_only=True)
        assert trained.keys() == expected.keys()
        for name, value in expected.items():
            assert float((trained[name] - value).abs().max()) <= TOL, (rank, name)
            moved += int(not torch.equal(value, initial[name]))
    assert moved >= 100  # training changed the weights (an untrained copy would match trivially)
