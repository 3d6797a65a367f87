"""The one event stream: the codec between events and metrics.jsonl records, the run folder's writer as a listener,
and a follower that shows what the job sent from the records alone."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from gptui.core import events as ev
from gptui.core.checkpoint import CHECKPOINT_KEYS, TrainingState, from_checkpoint, to_checkpoint
from gptui.core.follow import RunFollower
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob

EVERY_TYPE = [
    ev.Prepare("encoding", 0.25),
    ev.Prepare("preparing data"),
    ev.Started("r1", "/w/models/r1", 1234, "cpu", "float32", 5, 50, {"n_layer": 2, "lr": 0.001}, 2),
    ev.Step(6, 50, 1.5, 3.25, 0.000125, 2048.0, 12.5, {"kind": "process", "allocated": 1 << 20}),
    ev.Step(7, 50, 1.75, 3.0, 0.00025, 1024.0, None),
    ev.Eval(10, 2.5, 3.125, 3.25, 4.5, True),
    ev.Sample(10, "ROMEO:\nWhat light", 0.5),
    ev.Sample(10, "text"),
    ev.Log("step     10  train 3.1250  val 3.2500", "evaluation"),
    ev.Log("gptui 1.0; run r1"),
    ev.Saved(50, "running", 3.25, 4.5, 60.0),
    ev.Saved(0, "stopped", None, None, 0.5),
    ev.Finished("r1", "completed", "reached max_iters", 50, 3.25, 4.5, 60.0, 2000.0),
    ev.Finished("r1", "failed", "out of memory", 0, None, None, 1.0, 0.0),
]


@pytest.mark.parametrize("event", EVERY_TYPE, ids=lambda e: f"{type(e).__name__}")
def test_every_event_round_trips_through_its_json_record(event):
    record = json.loads(json.dumps(ev.to_record(event, step=3)))
    assert record["type"] == ev.RECORD_TYPES[type(event)]
    assert isinstance(record["step"], int)
    assert ev.from_record(record) == event


def test_every_event_type_has_a_record_type():
    assert {type(e) for e in EVERY_TYPE} == set(ev.RECORD_TYPES)
    assert len(set(ev.RECORD_TYPES.values())) == len(ev.RECORD_TYPES)


def test_an_event_without_a_step_is_recorded_at_the_step_given():
    assert ev.to_record(ev.Log("hello", "warning"), step=42) == {"type": "log", "step": 42, "line": "hello",
                                                                 "kind": "warning"}
    assert ev.to_record(ev.Eval(10, 2.5, 3.0, 3.0, 4.0, False), step=42)["step"] == 10


@pytest.mark.parametrize("record", [
    {"type": "train", "step": 1},  # fields missing
    {"type": "eval", "step": 1, "elapsed": 1.0, "train_loss": "x", "val_loss": 1.0, "val_bpb": 1.0, "best": True},
    {"type": "log", "step": 1, "line": 5},
    {"type": "sample", "step": True, "text": "t"},
    {"type": "nonsense", "step": 1},
    ["not", "a", "record"],
])
def test_a_record_that_is_not_an_event_reads_as_none(record):
    assert ev.from_record(record) is None


def test_a_legacy_step_record_takes_max_iters_from_the_reader():
    record = {"type": "train", "step": 10, "elapsed": 1.0, "loss": 3.5, "lr": 0.001, "tokens_per_sec": 2000.0,
              "eta_seconds": 9.0, "memory": {"kind": "process"}}
    assert ev.from_record(record, {"max_iters": 100}) == ev.Step(10, 100, 1.0, 3.5, 0.001, 2000.0, 9.0,
                                                                 {"kind": "process"})


def test_the_training_state_round_trips_through_the_checkpoints_keys():
    state = TrainingState(step=12, best_val_loss=2.5, best_val_bpb=3.5, bad_evals=1, elapsed=9.5,
                          batch_rng={"seed": 1}, torch_rng=torch.get_rng_state(), world_size=2,
                          rank_rng=[torch.get_rng_state()] * 2)
    checkpoint = to_checkpoint(state, {"w": torch.zeros(1)}, {"state": {}})
    assert set(CHECKPOINT_KEYS) <= set(checkpoint) and "cuda_rng" not in checkpoint
    back = from_checkpoint(checkpoint)
    assert dataclasses.replace(back, torch_rng=None, rank_rng=None) == \
        dataclasses.replace(state, torch_rng=None, rank_rng=None)
    assert torch.equal(back.torch_rng, state.torch_rng) and len(back.rank_rng) == 2
    older = {k: checkpoint[k] for k in CHECKPOINT_KEYS}  # written before world_size and bits per byte were kept
    assert from_checkpoint(older).world_size == 1 and from_checkpoint(older).best_val_bpb is None
    assert not TrainingState().evaluated and math.isinf(TrainingState().best_val_loss)


def test_the_run_folder_holds_the_stream_and_a_follower_shows_it_from_the_records_alone(
        workspace, corpus, tiny_config):
    """Every event the job sent (and the warning about a listener that raises, logged once while training goes
    on) is a record; a follower rebuilds the same events without reading train.log."""
    seen: list[ev.Event] = []

    def flaky(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.Step):
            raise RuntimeError("flaky display")

    config = dataclasses.replace(tiny_config, max_iters=12, eval_interval=6, sample_interval=6)
    finished = TrainJob(workspace, "tiny", config, on_event=flaky).run()
    assert finished.status == "completed"
    run = RunStore(workspace).resolve(finished.run_id)
    records = [json.loads(line) for line in run.file("metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    warnings = [r for r in records if r["type"] == "log" and r["kind"] == "warning"]
    assert len(warnings) == 1
    assert ".<locals>.flaky failed (RuntimeError: flaky display); training goes on" in warnings[0]["line"]
    assert run.file("train.log").read_text(encoding="utf-8").count("flaky display") == 1
    assert [r["type"] for r in records][-1] == "finish" and "start" in [r["type"] for r in records]
    assert {r["kind"] for r in records if r["type"] == "log"} >= {"info", "setting", "evaluation", "sample",
                                                                  "finish", "warning"}
    # each checkpoint is a record, and state.json is written from it: the last one is the finished run's
    saved = [r for r in records if r["type"] == "checkpoint"]
    assert [(r["step"], r["status"]) for r in saved] == [(6, "running"), (12, "running"), (12, "completed")]
    state = run.read_state()
    assert (state["status"], state["step"]) == ("completed", 12)
    assert state["best_val_bpb"] == pytest.approx(saved[-1]["best_val_bpb"])  # the record keeps 6 decimals
    assert state["best_val_loss"] == pytest.approx(saved[-1]["best_val_loss"])

    # the follower reads the records only: train.log's wording may change (here: all of it)
    run.file("train.log").write_text("reworded\nsample at step 6:\nnot a sample\n", encoding="utf-8")
    follower = RunFollower(run, config.max_iters)
    shown = follower.flush()
    sent = [ev.from_record(ev.to_record(e)) for e in seen if isinstance(e, ev.Step | ev.Eval | ev.Sample | ev.Log)]
    assert shown == sent
    assert [e.step for e in shown if isinstance(e, ev.Eval)] == [6, 12] and any(isinstance(e, ev.Sample)
                                                                              for e in shown)
    assert follower.poll() == []

    # following a resume that started after all this: the curves go on, the earlier lines and samples are not shown
    later = RunFollower(run, config.max_iters, since=records[-1]["time"] + 1).flush()
    assert [e for e in later if isinstance(e, ev.Log | ev.Sample)] == []
    assert [e.step for e in later if isinstance(e, ev.Eval)] == [6, 12]
