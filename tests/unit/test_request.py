"""A training request: the one command line of a training process round-trips through `gptui train`'s parser,
and the Train tab's requests resolve to exactly the settings of its form."""

from __future__ import annotations

import dataclasses

import pytest

from gptui.cli import build_parser, train_request
from gptui.core.config import config_to_dict
from gptui.core.errors import InputError
from gptui.core.launch import worker_argv
from gptui.core.request import TrainRequest, resolve_request

REQUESTS = [
    TrainRequest(corpus="tiny", preset="lecture", sets=("lr=1e-3", "n_layer=2", "text_field=a=b"), max_minutes=1.5,
                 name="mine", replace_errors=True, skip_bad_rows=True, workers=3),
    TrainRequest(resume="20260101", sets=("max_iters=40",), max_minutes=0.1),
    TrainRequest(corpus="notes.jsonl", init_from="base", sets=("dropout=0.1",)),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["new", "resume", "fine-tune"])
def test_the_worker_command_line_reads_back_as_the_same_request(request_, workspace):
    args = build_parser().parse_args(worker_argv(workspace, request_, debug=True))
    assert args.command == "train" and args.home == str(workspace.home) and args.debug
    assert train_request(args) == request_


def test_the_train_tabs_settings_resolve_to_its_form_exactly(workspace, tiny_config):
    form = dataclasses.replace(tiny_config, lr=1 / 3, dropout=0.1, text_field="body", trackers="tensorboard,wandb")
    plan = resolve_request(workspace, TrainRequest.with_settings("tiny", form))
    assert plan.config == form
    assert plan.device(workspace) == form.device


def test_a_fine_tune_keeps_the_source_runs_shape_and_refuses_a_change(workspace, run_copy):
    source = run_copy.read_config()["settings"]
    plan = resolve_request(workspace, TrainRequest(corpus="tiny", init_from=run_copy.id, sets=("lr=1e-4",)))
    kept = config_to_dict(plan.config)
    assert kept["n_embd"] == source["n_embd"] and kept["lr"] == 1e-4
    with pytest.raises(InputError, match="cannot change n_embd when fine-tuning"):
        resolve_request(workspace, TrainRequest(corpus="tiny", init_from=run_copy.id, sets=("n_embd=64",)))


def test_a_resume_keeps_its_runs_settings_and_device(workspace, run_copy):
    plan = resolve_request(workspace, TrainRequest(resume=run_copy.id, sets=("eval_iters=3",), max_minutes=2.0))
    assert plan.config is None and plan.overrides == {"eval_iters": "3", "max_minutes": 2.0}
    assert plan.device(workspace) == run_copy.read_config()["settings"]["device"]
    assert dataclasses.replace(plan, overrides={"device": " cuda "}).device(workspace) == "cuda"


@pytest.mark.parametrize(("request_", "message"), [
    (TrainRequest(), "train needs --input NAME"),
    (TrainRequest(resume="r", preset="tiny"), "--preset cannot be combined with --resume"),
    (TrainRequest(resume="r", init_from="s"), "--init-from cannot be combined with --resume"),
    (TrainRequest(init_from="s"), "--init-from needs --input NAME"),
    (TrainRequest(corpus="tiny", sets=("lr=2", "n_layer=0")), "n_layer must be at least 1; lr must be at most 1"),
    (TrainRequest(corpus="tiny", sets=("lr",)), "expected KEY=VALUE, got 'lr'"),
])
def test_a_bad_request_is_one_line(request_, message, workspace):
    with pytest.raises(InputError, match=message):
        resolve_request(workspace, request_)
