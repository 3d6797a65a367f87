"""The trainer: a tiny run learns, writes a complete run folder, stops and resumes exactly, early-stops,
honours a time budget, and follows the learning-rate schedule."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from gptui.core import events as ev
from gptui.core.config import check
from gptui.core.errors import CorpusError, InputError
from gptui.core.runs import RunStore
from gptui.core.schedule import lr_at
from gptui.core.trainer import TrainJob


def train(ws, config, *, corpus="tiny", stop_at_eval: int | None = None, **kw):
    """Run a job to its end, collecting its events; optionally ask it to stop at the evaluation of a step."""
    events: list = []
    job = None

    def on_event(e):
        events.append(e)
        if stop_at_eval is not None and isinstance(e, ev.Eval) and e.step >= stop_at_eval:
            job.stop()

    job = TrainJob(ws, corpus, config, on_event=on_event, **kw)
    finished = job.run()
    return job, finished, events


def only(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_tiny_run_lowers_the_loss(workspace, corpus, tiny_config):
    config = dataclasses.replace(tiny_config, max_iters=60, eval_interval=20, sample_interval=0)
    _, finished, events = train(workspace, config)
    assert finished.status == "completed" and finished.step == 60
    evals = only(events, ev.Eval)
    assert [e.step for e in evals] == [20, 40, 60]
    first_step = only(events, ev.Step)[0]
    assert evals[-1].val_loss < evals[0].val_loss < first_step.loss + 0.5
    assert evals[-1].val_loss < math.log(finished_vocab(workspace, finished)) - 0.3
    assert finished.best_val_loss == pytest.approx(min(e.val_loss for e in evals), abs=1e-5)
    assert all(math.isfinite(e.val_bpb) and e.val_bpb > 0 for e in evals)


def finished_vocab(ws, finished) -> int:
    return RunStore(ws).resolve(finished.run_id).read_config()["vocab_size"]


def test_events_in_order(workspace, corpus, tiny_config):
    _, finished, events = train(workspace, tiny_config)
    kinds = [type(e) for e in events]
    assert kinds[-1] is ev.Finished and events[-1] == finished
    started = only(events, ev.Started)
    assert len(started) == 1 and kinds.index(ev.Started) < kinds.index(ev.Step)
    assert started[0].start_step == 0 and started[0].max_iters == 20 and started[0].device == "cpu"
    assert started[0].params == RunStore(workspace).resolve(finished.run_id).read_config()["params"]
    steps = [e.step for e in only(events, ev.Step)]
    assert steps == sorted(set(steps)) and steps[-1] == 20
    assert [e.step for e in only(events, ev.Sample)] == [10, 20]
    assert all(isinstance(e.text, str) for e in only(events, ev.Sample))
    assert all(e.seconds > 0 for e in only(events, ev.Sample)), "the trainer times its samples"
    assert only(events, ev.Prepare), "data preparation is reported"


def test_run_folder_is_complete_and_loadable(workspace, corpus, tiny_config):
    from safetensors.torch import load_file

    from gptui.core.data import sha256_file
    from gptui.core.generate import load_model
    from gptui.core.tokenizer import load_tokenizer

    _, finished, events = train(workspace, tiny_config, name="complete")
    run = RunStore(workspace).resolve(finished.run_id)
    assert "complete" in run.id

    config = json.loads(run.file("config.json").read_text(encoding="utf-8"))
    assert config["settings"] == dataclasses.asdict(tiny_config)
    assert config["corpus"] == "tiny"
    assert config["corpus_sha256"] == sha256_file(corpus)
    assert config["gptui_version"] and config["torch_version"] == torch.__version__
    assert config["created"][:4].isdigit() and "T" in config["created"]
    assert config["params"] > 0

    tok = load_tokenizer(run.file("tokenizer.json"))
    assert tok.kind == "char" and tok.vocab_size == config["vocab_size"]

    weights = load_file(str(run.file("model.safetensors")))
    emb = weights.get("lm_head.weight", weights.get("transformer.wte.weight"))
    assert emb.shape == (tok.vocab_size, 32)
    assert sum(t.numel() for t in weights.values()) == config["params"], "tied embeddings stored once"
    loaded = load_model(run, "cpu")
    assert loaded.model.num_params() == config["params"]

    ckpt = torch.load(run.file("checkpoint.pt"), map_location="cpu", weights_only=True)
    assert ckpt["step"] == 20
    assert {"model", "optimizer"} <= set(ckpt)
    assert ckpt["model"].keys() >= {k for k in weights}

    metrics = [json.loads(line) for line in run.file("metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train_records = [m for m in metrics if m["type"] == "train"]
    eval_records = [m for m in metrics if m["type"] == "eval"]
    assert train_records and {"step", "elapsed", "loss", "lr", "tokens_per_sec", "memory"} <= set(train_records[0])
    assert [m["step"] for m in eval_records] == [10, 20]
    assert {"train_loss", "val_loss", "val_bpb", "best"} <= set(eval_records[0])

    log = run.file("train.log").read_text(encoding="utf-8")
    assert "parameters" in log and "device cpu" in log
    assert "n_layer" in log and "block_size" in log, "the header lists the settings"
    assert "tokenizer: trained in" in log
    assert "step     10" in log and "step     20" in log
    assert "sample at step 10" in log
    assert "finished: completed (reached max_iters) after 20 steps" in log
    assert "bits per byte" in log and "tokens/s" in log

    state = json.loads(run.file("state.json").read_text(encoding="utf-8"))
    assert state["status"] == "completed"
    assert state["step"] == 20
    assert state["best_val_loss"] == pytest.approx(finished.best_val_loss)
    assert state["duration"] >= 0
    assert state.get("stop_reason") == "reached max_iters"
    assert not list(run.path.glob(".*.tmp")), "no temporary files left behind"


def test_best_weights_are_those_of_the_lowest_val_loss(workspace, corpus, tiny_config):
    from gptui.core.generate import load_model
    from gptui.core.trainer import estimate_loss

    _, finished, events = train(workspace, tiny_config)
    run = RunStore(workspace).resolve(finished.run_id)
    loaded = load_model(run, "cpu")
    from gptui.core.data import TokenizerSpec, prepare

    data = prepare(corpus, TokenizerSpec.from_config(tiny_config), workspace.cache)
    import contextlib

    losses = estimate_loss(loaded.model, data, tiny_config, contextlib.nullcontext(), "cpu", tiny_config.seed + 1)
    assert losses["val"] == pytest.approx(finished.best_val_loss, abs=1e-4)


def test_second_run_is_served_from_the_cache(workspace, corpus, tiny_config):
    train(workspace, tiny_config)
    _, finished, events = train(workspace, tiny_config)
    log = RunStore(workspace).resolve(finished.run_id).file("train.log").read_text(encoding="utf-8")
    assert "served from cache" in log


# --- stop and resume ---------------------------------------------------------------------------------------------


def _final_model_state(ws, run_id):
    run = RunStore(ws).resolve(run_id)
    return torch.load(run.file("checkpoint.pt"), map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_stop_then_resume_equals_uninterrupted(workspace, corpus, tiny_config, grad_accum):
    config = dataclasses.replace(tiny_config, dropout=0.2, grad_accum=grad_accum, sample_interval=5)
    _, whole, _ = train(workspace, config, name="whole")
    assert whole.status == "completed" and whole.step == 20

    job, stopped, events = train(workspace, config, name="parted", stop_at_eval=10)
    assert stopped.status == "stopped" and stopped.step == 10
    assert stopped.reason == "stopped by user"
    run = RunStore(workspace).resolve(stopped.run_id)
    assert run.read_state()["status"] == "stopped"
    assert run.read_state()["step"] == 10

    resumed_events: list = []
    resumed = TrainJob(workspace, None, None, resume=stopped.run_id, on_event=resumed_events.append).run()
    assert resumed.run_id == stopped.run_id
    assert resumed.status == "completed" and resumed.step == 20
    assert only(resumed_events, ev.Started)[0].start_step == 10
    assert [e.step for e in only(resumed_events, ev.Eval)] == [20]

    a = _final_model_state(workspace, whole.run_id)
    b = _final_model_state(workspace, stopped.run_id)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.best_val_loss == whole.best_val_loss
    from safetensors.torch import load_file

    wa = load_file(str(RunStore(workspace).resolve(whole.run_id).file("model.safetensors")))
    wb = load_file(str(run.file("model.safetensors")))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_appends_to_metrics_and_log_without_duplicates(workspace, corpus, tiny_config):
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    run = RunStore(workspace).resolve(stopped.run_id)
    before = run.metrics()
    TrainJob(workspace, None, None, resume=stopped.run_id).run()
    after = run.metrics()
    assert after[: len(before)] == before, "resume appends, it does not rewrite history"
    for kind in ("train", "eval"):
        steps = [m["step"] for m in after if m["type"] == kind]
        assert steps == sorted(set(steps)), f"{kind} steps duplicated or out of order: {steps}"
    assert [m["step"] for m in after if m["type"] == "eval"] == [10, 20]
    log = run.file("train.log").read_text(encoding="utf-8")
    assert log.count("finished:") == 2
    assert "resuming run" in log and "finished: stopped" in log and "finished: completed" in log
    assert run.read_state()["status"] == "completed"


def test_resume_drops_metrics_written_after_the_checkpoint(workspace, corpus, tiny_config):
    """A killed trainer may have logged steps past its last checkpoint; a resume replays them once."""
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    run = RunStore(workspace).resolve(stopped.run_id)
    run.append_metric({"type": "train", "step": 13, "loss": 9.0})
    with open(run.file("metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"type": "train", "st')  # a torn last line
    TrainJob(workspace, None, None, resume=stopped.run_id).run()
    steps = [m["step"] for m in run.metrics() if m["type"] == "train"]
    assert steps == sorted(set(steps))
    assert all(m.get("loss") != 9.0 for m in run.metrics())


def test_resume_can_extend_max_iters(workspace, corpus, tiny_config):
    _, first, _ = train(workspace, tiny_config)
    resumed = TrainJob(workspace, None, None, resume=first.run_id, overrides={"max_iters": "30"}).run()
    assert resumed.status == "completed" and resumed.step == 30
    assert RunStore(workspace).resolve(first.run_id).read_config()["settings"]["max_iters"] in (20, 30)


def test_resume_refuses_model_changes(workspace, corpus, tiny_config):
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    run = RunStore(workspace).resolve(stopped.run_id)
    state_before = run.read_state()
    with pytest.raises(InputError, match="cannot change n_layer"):
        TrainJob(workspace, None, None, resume=stopped.run_id, overrides={"n_layer": "2"}).run()
    assert run.read_state()["status"] == state_before["status"], "a refused resume leaves the run as it was"


def test_resume_accepts_a_model_setting_restated_in_another_spelling(workspace, corpus, tiny_config):
    _, first, _ = train(workspace, tiny_config)
    same = {"lr": f"{tiny_config.lr:.6f}", "n_layer": f"{tiny_config.n_layer}.0", "max_iters": "25"}
    resumed = TrainJob(workspace, None, None, resume=first.run_id, overrides=same).run()
    assert resumed.status == "completed" and resumed.step == 25


def test_resume_encodes_with_the_runs_own_tokenizer_not_the_caches(workspace, corpus, tiny_config):
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    run = RunStore(workspace).resolve(stopped.run_id)
    for entry in workspace.cache.iterdir():  # the settings' entry now holds another tokenizer: never used
        chars = json.loads((entry / "tokenizer.json").read_text())["chars"]
        (entry / "tokenizer.json").write_text(json.dumps({"type": "gptui-char", "version": 1, "chars": chars[::-1]}))
    resumed = TrainJob(workspace, None, None, resume=run.id).run()
    assert resumed.status == "completed" and resumed.step == tiny_config.max_iters
    assert f"tokenizer: run {run.id}'s (not trained)" in run.file("train.log").read_text(encoding="utf-8")
    # with the reversed ids the model would start over; with its own it goes on from where it stopped
    assert resumed.best_val_loss <= stopped.best_val_loss


def test_resume_refuses_a_changed_corpus(workspace, corpus, tiny_config):
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    corpus.write_text(corpus.read_text(encoding="utf-8") + "more text\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed"):
        TrainJob(workspace, None, None, resume=stopped.run_id).run()
    assert RunStore(workspace).resolve(stopped.run_id).read_state()["status"] == "stopped"


def test_resume_unknown_run(workspace, corpus):
    from gptui.core.errors import RunNotFound

    with pytest.raises(RunNotFound):
        TrainJob(workspace, None, None, resume="nope").run()


# --- stopping rules ----------------------------------------------------------------------------------------------


def test_early_stopping_by_patience(workspace, corpus, tiny_config):
    # a learning rate too small to move fp32 weights: the validation loss cannot improve after the first eval
    config = check(dataclasses.replace(tiny_config, lr=1e-12, min_lr=0.0, weight_decay=0.0, max_iters=100,
                                       eval_interval=5, patience=2, sample_interval=0))
    _, finished, events = train(workspace, config)
    assert finished.status == "completed"
    assert finished.reason == "early stopping: no improvement in 2 evaluations"
    assert finished.step == 15
    evals = only(events, ev.Eval)
    assert [e.best for e in evals] == [True, False, False]
    run = RunStore(workspace).resolve(finished.run_id)
    assert run.read_state()["stop_reason"].startswith("early stopping")


def test_time_budget(workspace, corpus, tiny_config):
    config = check(dataclasses.replace(tiny_config, max_iters=1_000_000, max_minutes=0.001, eval_interval=50,
                                       sample_interval=0))
    _, finished, _ = train(workspace, config)
    assert finished.status == "completed"
    assert finished.reason == "time budget of 0.001 min reached"
    assert 0 < finished.step < 1_000_000
    run = RunStore(workspace).resolve(finished.run_id)
    state = run.read_state()
    assert state["status"] == "completed" and state["stop_reason"].startswith("time budget")
    assert run.file("model.safetensors").exists() and run.file("checkpoint.pt").exists()
    assert "time budget" in run.file("train.log").read_text(encoding="utf-8")


def test_stop_before_first_eval_still_saves(workspace, corpus, tiny_config):
    events = []
    job = None

    def on_event(e):
        events.append(e)
        if isinstance(e, ev.Started):
            job.stop("test stop")

    job = TrainJob(workspace, "tiny", tiny_config, on_event=on_event)
    finished = job.run()
    assert finished.status == "stopped" and finished.reason == "test stop"
    assert finished.step == 0
    run = RunStore(workspace).resolve(finished.run_id)
    assert run.read_state()["status"] == "stopped"
    resumed = TrainJob(workspace, None, None, resume=run.id).run()
    assert resumed.status == "completed" and resumed.step == 20


def _stop_at_step(workspace, config, at: int, monkeypatch, **kw):
    """Train until the step event of `at` (every step reported), then ask the job to stop."""
    from gptui.core import trainer

    monkeypatch.setattr(trainer, "REPORT_SECONDS", 0.0)
    events: list = []
    job = None

    def on_event(e):
        events.append(e)
        if isinstance(e, ev.Step) and e.step >= at:
            job.stop("test stop")

    job = TrainJob(workspace, "tiny", config, on_event=on_event, **kw)
    return job.run(), events


def test_a_stop_before_the_first_evaluation_keeps_what_the_run_learned(workspace, corpus, tiny_config, monkeypatch):
    from gptui.core.generate import generate_text, load_model
    from gptui.core.sampling import SamplingSettings

    finished, events = _stop_at_step(workspace, tiny_config, 3, monkeypatch)  # its first evaluation is at 10
    assert finished.status == "stopped" and finished.step == 3
    assert [e.step for e in only(events, ev.Eval)] == [3]
    assert finished.best_val_loss == pytest.approx(only(events, ev.Eval)[0].val_loss, abs=1e-5)
    store = RunStore(workspace)
    run = store.resolve(finished.run_id)
    assert run.file("model.safetensors").is_file()
    state = run.read_state()
    assert state["status"] == "stopped" and state["step"] == 3 and state["best_val_loss"] == finished.best_val_loss
    assert [m["step"] for m in run.metrics() if m["type"] == "eval"] == [3]
    assert store.info(run).damaged is None and store.newest().id == run.id, "the run can be talked to"

    loaded = load_model(run, "cpu")
    text = generate_text(loaded, "\n", SamplingSettings(max_new_tokens=20, seed=1))
    assert isinstance(text, str) and text
    ckpt = torch.load(run.file("checkpoint.pt"), map_location="cpu", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["best_val_loss"] == pytest.approx(finished.best_val_loss, abs=1e-5)


def test_a_stop_whose_evaluation_is_worse_keeps_the_earlier_best_weights(workspace, corpus, tiny_config,
                                                                          monkeypatch):
    from gptui.core import trainer

    real = trainer.estimate_loss
    calls = []

    def worse_the_second_time(*args, **kw):
        losses = real(*args, **kw)
        calls.append(losses)
        return {**losses, "val": losses["val"] + (10.0 if len(calls) == 2 else 0.0)}

    monkeypatch.setattr(trainer, "estimate_loss", worse_the_second_time)
    monkeypatch.setattr(trainer, "REPORT_SECONDS", 0.0)
    saved_at_10: list[bytes] = []
    job = None

    def on_event(e):
        if isinstance(e, ev.Eval) and e.step == 10:
            (run_dir,) = workspace.models.iterdir()
            saved_at_10.append((run_dir / "model.safetensors").read_bytes())
        if isinstance(e, ev.Step) and e.step >= 12:
            job.stop()

    job = TrainJob(workspace, "tiny", dataclasses.replace(tiny_config, sample_interval=0), on_event=on_event)
    finished = job.run()
    assert finished.status == "stopped" and finished.step == 12
    run = RunStore(workspace).resolve(finished.run_id)
    evals = [m for m in run.metrics() if m["type"] == "eval"]
    assert [(m["step"], m["best"]) for m in evals] == [(10, True), (12, False)]
    assert run.file("model.safetensors").read_bytes() == saved_at_10[0]
    assert finished.best_val_loss == pytest.approx(evals[0]["val_loss"], abs=1e-5)
    assert torch.load(run.file("checkpoint.pt"), map_location="cpu", weights_only=True)["step"] == 12


def test_a_stop_right_after_an_evaluation_does_not_evaluate_again(workspace, corpus, tiny_config):
    _, stopped, events = train(workspace, tiny_config, stop_at_eval=10)
    assert stopped.step == 10 and [e.step for e in only(events, ev.Eval)] == [10]


def test_a_resumed_then_stopped_run_evaluates_where_it_stopped(workspace, corpus, tiny_config, monkeypatch):
    first, _ = _stop_at_step(workspace, tiny_config, 3, monkeypatch)
    resumed, events = _stop_at_step(workspace, None, 6, monkeypatch, resume=first.run_id)
    assert resumed.status == "stopped" and resumed.step == 6
    assert [e.step for e in only(events, ev.Eval)] == [6]
    run = RunStore(workspace).resolve(first.run_id)
    assert [m["step"] for m in run.metrics() if m["type"] == "eval"] == [3, 6]


def test_stop_from_a_step_event_is_honoured_within_one_step(workspace, corpus, tiny_config):
    events = []
    job = None

    def on_event(e):
        events.append(e)
        if isinstance(e, ev.Step) and e.step >= 10:
            job.stop()

    job = TrainJob(workspace, "tiny", tiny_config, on_event=on_event)
    finished = job.run()
    assert finished.status == "stopped"
    stop_step = next(e.step for e in events if isinstance(e, ev.Step) and e.step >= 10)
    assert finished.step == stop_step
    assert max(e.step for e in only(events, ev.Step)) == stop_step


def test_stop_from_another_thread(workspace, corpus, tiny_config):
    """The TUI runs the job in a worker thread and calls stop() from its own."""
    import threading

    config = dataclasses.replace(tiny_config, max_iters=1_000_000, sample_interval=0, eval_interval=50)
    started = threading.Event()
    job = TrainJob(workspace, "tiny", config,
                   on_event=lambda e: started.set() if isinstance(e, ev.Step) else None)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("finished", job.run()))
    worker.start()
    assert started.wait(60)
    job.stop("stop button")
    worker.join(60)
    assert not worker.is_alive()
    finished = result["finished"]
    assert finished.status == "stopped" and finished.reason == "stop button"
    assert 0 < finished.step < 1_000_000
    assert RunStore(workspace).resolve(finished.run_id).read_state()["status"] == "stopped"


def test_broken_listener_does_not_kill_the_run(workspace, corpus, tiny_config):
    def on_event(e):
        raise RuntimeError("listener bug")

    finished = TrainJob(workspace, "tiny", tiny_config, on_event=on_event).run()
    assert finished.status == "completed"


# --- refusals ----------------------------------------------------------------------------------------------------


def test_short_corpus_refused_before_a_run_is_created(workspace, tiny_config):
    (workspace.inputs / "short.txt").write_text("just a few words\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="too short"):
        TrainJob(workspace, "short", tiny_config).run()
    assert RunStore(workspace).runs() == []


def test_invalid_config_refused_as_bad_input(workspace, corpus, tiny_config):
    with pytest.raises(InputError, match="divisible") as info:
        TrainJob(workspace, "tiny", dataclasses.replace(tiny_config, n_head=3)).run()
    assert info.value.exit_code == 2
    assert not str(info.value).startswith("ConfigError")
    assert RunStore(workspace).runs() == []


@pytest.mark.parametrize("overrides", [{"max_iters": "abc"}, {"eval_interval": "0"}])
def test_resume_with_invalid_override_refused_as_bad_input(workspace, corpus, tiny_config, overrides):
    _, stopped, _ = train(workspace, tiny_config, stop_at_eval=10)
    with pytest.raises(InputError) as info:
        TrainJob(workspace, None, None, resume=stopped.run_id, overrides=overrides).run()
    assert info.value.exit_code == 2
    assert RunStore(workspace).resolve(stopped.run_id).read_state()["status"] == "stopped"


def test_unknown_corpus_refused(workspace, tiny_config):
    with pytest.raises(CorpusError, match="no corpus"):
        TrainJob(workspace, "missing", tiny_config).run()


# --- learning rate -----------------------------------------------------------------------------------------------


def test_lr_schedule(tiny_config):
    config = dataclasses.replace(tiny_config, lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    warm = [lr_at(s, config) for s in range(10)]
    assert all(0 < a < b for a, b in zip(warm, warm[1:], strict=False)), "linear warm-up increases"
    assert warm[0] > 0
    assert warm[-1] < config.lr
    assert lr_at(10, config) == pytest.approx(config.lr)
    decay = [lr_at(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), "cosine decay never increases"
    assert lr_at(60, config) == pytest.approx((config.lr + config.min_lr) / 2)
    assert lr_at(110, config) == pytest.approx(config.min_lr)
    assert lr_at(1000, config) == pytest.approx(config.min_lr)
    assert all(config.min_lr <= x <= config.lr for x in decay)


def test_lr_schedule_without_warmup(tiny_config):
    config = dataclasses.replace(tiny_config, lr=1e-3, min_lr=1e-3, warmup_iters=0, max_iters=50)
    assert all(lr_at(s, config) == pytest.approx(1e-3) for s in range(60)), "constant when min_lr == lr"


def test_lr_used_by_the_trainer_follows_the_schedule(workspace, corpus, tiny_config):
    _, finished, events = train(workspace, tiny_config)
    for step in only(events, ev.Step):
        # the reported lr is the one of the last step taken (step - 1, counting from 0)
        assert step.lr == pytest.approx(lr_at(step.step - 1, tiny_config))


def test_the_first_step_is_reported_and_a_report_follows_its_step(workspace, corpus, tiny_config, monkeypatch):
    """A report is decided after the step that made it due: the first step of a run is always reported, and a step
    slow enough to make a report due is in that report, not the next one."""
    from gptui.core import trainer

    monkeypatch.setattr(trainer, "REPORT_SECONDS", 1e9)  # only the first step and the evaluations report
    config = dataclasses.replace(tiny_config, max_iters=20, eval_interval=10, sample_interval=0)
    _, finished, events = train(workspace, config)
    assert [e.step for e in only(events, ev.Step)] == [1, 10, 20]

    clock = {"now": 0.0}
    draws: list = []
    monkeypatch.setattr(trainer, "REPORT_SECONDS", 5.0)
    real_next = trainer.BatchSampler.next

    def slow_step(self):  # the batch of step 4 takes "10 s": its report is due right after it, not after step 5
        draws.append(1)
        if len(draws) == 4:
            clock["now"] += 10.0
        return real_next(self)

    monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(trainer.BatchSampler, "next", slow_step)
    steps: list = []
    config = dataclasses.replace(tiny_config, max_iters=8, eval_interval=8, sample_interval=0)
    TrainJob(workspace, "tiny", config, on_event=lambda e: isinstance(e, ev.Step) and steps.append(e.step)).run()
    assert steps == [1, 4, 8]
