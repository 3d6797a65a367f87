"""A schedule that fits the time budget: with max_minutes, the first steps are timed (on a fake clock here, never
the wall clock), the steps that fit are fixed once, recorded in config.json and the log, the cosine ends there,
and a resume keeps them."""

from __future__ import annotations

import dataclasses

import pytest

from gptui.core import events as ev
from gptui.core import trainer
from gptui.core.config import check
from gptui.core.runs import RunStore
from gptui.core.trainer import FIT_SKIP_STEPS, FIT_STEPS, TrainJob, fit_to_budget, lr_at


class FakeClock:
    """Each reading is `seconds` per step later than the one before, over the FIT_STEPS the trainer times."""

    def __init__(self, seconds: float):
        self.now, self.seconds = 0.0, seconds
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.seconds * FIT_STEPS
        return self.now


@pytest.fixture
def budgeted(tiny_config):
    """One minute of budget, 20 steps planned: at a fake second a step about 55 steps fit."""
    return check(dataclasses.replace(tiny_config, max_iters=20, eval_interval=10, sample_interval=0, max_minutes=1.0))


def train(ws, config, clock, monkeypatch, *, stop_at_eval=None, **kw):
    monkeypatch.setattr(trainer, "step_clock", clock)
    events, job = [], None

    def on_event(e):
        events.append(e)
        if stop_at_eval is not None and isinstance(e, ev.Eval) and e.step >= stop_at_eval:
            job.stop()

    job = TrainJob(ws, "tiny" if kw.get("resume") is None else None, config, on_event=on_event, **kw)
    return job.run(), events


def test_the_steps_that_fit_count_each_step_and_the_evaluations():
    config = check(dataclasses.replace(trainer.Config(), eval_iters=3, eval_interval=10, grad_accum=1))
    # an evaluation: 2 x 3 micro-batches forward, a third of a step each = 2 steps' time
    assert fit_to_budget(10, 1.0, 100.0, config) == 10 + int((97.0 - 2.0) / 1.2)
    assert fit_to_budget(10, 1.0, 200.0, config) > fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 2.0, 100.0, config) < fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 1.0, 100.0, config, world_size=2) > fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 1.0, 0.5, config) == 11, "a budget already spent still takes one more step"


def test_a_budget_fixes_where_the_schedule_ends_and_the_run_fills_it(workspace, corpus, budgeted, monkeypatch):
    clock = FakeClock(1.0)
    finished, events = train(workspace, budgeted, clock, monkeypatch)
    run = RunStore(workspace).resolve(finished.run_id)
    schedule = run.read_config()["schedule"]
    fitted_at = FIT_SKIP_STEPS + FIT_STEPS
    assert clock.readings == 2 and schedule["fitted_at_step"] == fitted_at
    assert schedule["seconds_per_step"] == 1.0 and schedule["max_minutes"] == 1.0
    # 60 s less the test's own few seconds of wall time: between these, whatever the machine's load
    end = schedule["max_iters"]
    assert fit_to_budget(fitted_at, 1.0, 50.0, budgeted) <= end <= fit_to_budget(fitted_at, 1.0, 60.0, budgeted)
    assert end > budgeted.max_iters, "the budget left room for more steps than max_iters planned"

    assert finished.status == "completed" and finished.step == end
    assert finished.reason == "time budget of 1 min reached"
    assert run.read_config()["settings"]["max_iters"] == 20, "the setting stays as given"
    fitted = dataclasses.replace(budgeted, max_iters=end)
    steps = [e for e in events if isinstance(e, ev.Step) and e.step > fitted_at]
    assert steps and all(e.max_iters == end for e in steps)
    for e in steps:
        assert e.lr == pytest.approx(lr_at(e.step - 1, fitted))  # the lr of the step each event reports
    assert lr_at(end - 1, fitted) < budgeted.min_lr + 0.01 * (budgeted.lr - budgeted.min_lr)
    assert [e.step for e in events if isinstance(e, ev.Eval)][-1] == end
    log = run.file("train.log").read_text()
    assert (f"schedule: 1,000.0 ms a step (steps {FIT_SKIP_STEPS + 1}-{fitted_at}), so {end:,} steps fit the "
            f"1-minute budget: the cosine ends at step {end:,} instead of 20") in log


def test_a_resume_keeps_the_schedule_fitted_when_the_run_started(workspace, corpus, budgeted, monkeypatch):
    stopped, _ = train(workspace, budgeted, FakeClock(1.0), monkeypatch, stop_at_eval=20)
    run = RunStore(workspace).resolve(stopped.run_id)
    end = run.read_config()["schedule"]["max_iters"]
    assert stopped.status == "stopped" and stopped.step == 20 < end

    slower = FakeClock(10.0)  # a busier machine now: fitting again would give far fewer steps
    resumed, events = train(workspace, None, slower, monkeypatch, resume=stopped.run_id)
    assert slower.readings == 0, "nothing is timed again"
    assert resumed.status == "completed" and resumed.step == end
    assert [e.max_iters for e in events if isinstance(e, ev.Started)] == [end]
    assert run.read_config()["schedule"]["max_iters"] == end
    assert f"schedule: ends at step {end:,}, as fitted to the 1-minute budget" in run.file("train.log").read_text()


def test_a_resume_with_another_budget_fits_again(workspace, corpus, budgeted, monkeypatch):
    stopped, _ = train(workspace, budgeted, FakeClock(1.0), monkeypatch, stop_at_eval=20)
    first = RunStore(workspace).resolve(stopped.run_id).read_config()["schedule"]
    resumed, _ = train(workspace, None, FakeClock(1.0), monkeypatch, resume=stopped.run_id,
                       overrides={"max_minutes": "0.5"})
    again = RunStore(workspace).resolve(stopped.run_id).read_config()["schedule"]
    assert again["max_minutes"] == 0.5 and again["fitted_at_step"] == 20 + FIT_SKIP_STEPS + FIT_STEPS
    assert again["max_iters"] < first["max_iters"] and resumed.step == again["max_iters"]


def test_without_a_budget_nothing_is_timed_and_max_iters_holds(workspace, corpus, budgeted, monkeypatch):
    clock = FakeClock(1.0)
    finished, _ = train(workspace, dataclasses.replace(budgeted, max_minutes=0.0), clock, monkeypatch)
    run = RunStore(workspace).resolve(finished.run_id)
    assert clock.readings == 0 and "schedule" not in run.read_config()
    assert finished.step == 20 and finished.reason == "reached max_iters"
    assert "schedule:" not in run.file("train.log").read_text()


def test_another_rank_takes_the_schedule_rank_0_fitted_when_resuming(workspace, corpus, budgeted, monkeypatch):
    """A resumed run's other ranks get the fitted end from rank 0 (which read config.json), so every rank stops
    at the same step and none times anything."""
    from gptui.core.data import TokenizerSpec, prepare
    from gptui.core.distributed import Dist

    stopped, _ = train(workspace, budgeted, FakeClock(1.0), monkeypatch, stop_at_eval=10)
    schedule = RunStore(workspace).resolve(stopped.run_id).read_config()["schedule"]
    data = prepare(corpus, TokenizerSpec.from_config(budgeted), workspace.cache)

    class SecondRank(Dist):
        def __init__(self):
            self.rank, self.world_size = 1, 2

        def from_main(self, work):
            return {"run_id": stopped.run_id, "settings": dataclasses.asdict(budgeted), "corpus": "tiny.txt",
                    "corpus_sha256": data.corpus_sha256, "tokens": len(data.tokens), "resume": True,
                    "schedule": schedule}

        def gather(self, value):
            return [value, value]

    clock = FakeClock(10.0)
    monkeypatch.setattr(trainer, "step_clock", clock)
    finished = TrainJob(workspace, None, None, dist=SecondRank()).run()
    assert clock.readings == 0 and finished.step == schedule["max_iters"]
