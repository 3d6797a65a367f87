"""A schedule that fits the time budget: with max_minutes, the steps are timed (on a fake clock here, never the wall
clock), the step the schedule ends at is fitted after the first steps and fitted again once a fifth of them are
done (evaluations, samples and checkpoints taken out of the pace and counted at their measured cost), recorded in
config.json and the log; the cosine ends there, and a resume keeps it."""

from __future__ import annotations

import dataclasses

import pytest

from gptui.core import events as ev
from gptui.core import schedule, trainer
from gptui.core.config import check
from gptui.core.runs import RunStore
from gptui.core.schedule import FIT_SKIP_STEPS, FIT_STEPS, BudgetFit, fit_to_budget, lr_at
from gptui.core.trainer import TrainingLoop, TrainJob


class FakeMachine:
    """The clock the fit reads: a training step takes `seconds` on it, an evaluation `eval_seconds`, the rest
    nothing."""

    def __init__(self, seconds: float, monkeypatch, eval_seconds: float = 0.0):
        self.now, self.readings = 0.0, 0
        step, evaluate = TrainingLoop.train_step, TrainingLoop.evaluate

        def timed_step(loop):
            step(loop)
            self.now += seconds

        def timed_evaluate(loop):
            evaluate(loop)
            self.now += eval_seconds

        monkeypatch.setattr(TrainingLoop, "train_step", timed_step)
        monkeypatch.setattr(TrainingLoop, "evaluate", timed_evaluate)
        monkeypatch.setattr(schedule, "step_clock", self.read)

    def read(self) -> float:
        self.readings += 1
        return self.now


@pytest.fixture
def budgeted(tiny_config):
    """One minute of budget, 20 steps planned: at a fake second a step about 55 steps fit."""
    return check(dataclasses.replace(tiny_config, max_iters=20, eval_interval=10, sample_interval=0, max_minutes=1.0))


def train(ws, config, *, stop_at_eval=None, **kw):
    events, job = [], None

    def on_event(e):
        events.append(e)
        if stop_at_eval is not None and isinstance(e, ev.Eval) and e.step >= stop_at_eval:
            job.stop()

    job = TrainJob(ws, "tiny" if kw.get("resume") is None else None, config, on_event=on_event, **kw)
    return job.run(), events


def test_the_steps_that_fit_count_each_step_the_evaluations_and_the_samples():
    config = check(dataclasses.replace(trainer.Config(), eval_iters=3, eval_interval=10, grad_accum=1,
                                       sample_interval=0))
    # 97 s of 100: an evaluation estimated at 2 x 3 micro-batches forward, a third of a step each = 2 s, at steps
    # 20, 30, ... and at the end: 80 steps and 8 evaluations fit (96 s), 81 and 9 do not (99 s)
    assert fit_to_budget(10, 1.0, 100.0, config) == 90
    assert fit_to_budget(10, 1.0, 100.0, config, eval_seconds=0.0) == 107, "a measured evaluation replaces it"
    assert fit_to_budget(10, 1.0, 100.0, config, eval_seconds=7.0) == 65  # 55 steps and 6 evaluations: 97 s
    sampling = dataclasses.replace(config, sample_interval=5)
    assert fit_to_budget(10, 1.0, 100.0, sampling, sample_seconds=1.0) < fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 1.0, 200.0, config) > fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 2.0, 100.0, config) < fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 1.0, 100.0, config, world_size=2) > fit_to_budget(10, 1.0, 100.0, config)
    assert fit_to_budget(10, 1.0, 0.5, config) == 11, "a budget already spent still takes one more step"
    assert fit_to_budget(10, 1.0, -5.0, config) == 11


def test_an_end_just_past_an_evaluation_leaves_that_evaluation_to_the_end():
    """The budget, not the user, puts the end, often a few steps past a multiple of eval_interval: the end's own
    evaluation stands for that one, and the fit counts one evaluation where there used to be two."""
    config = check(dataclasses.replace(trainer.Config(), eval_iters=3, eval_interval=70, grad_accum=1,
                                       sample_interval=0, max_minutes=4.0))
    unbudgeted = dataclasses.replace(config, max_minutes=0.0)
    assert schedule.near_end_steps(config) == 7 and schedule.near_end_steps(unbudgeted) == 0

    def evaluated(c, end):
        return [s for s in range(1, end + 1) if schedule.evaluates_at(s, dataclasses.replace(c, max_iters=end))]

    assert evaluated(config, 211) == [70, 140, 211]
    assert evaluated(config, 217) == [70, 140, 217]
    assert evaluated(config, 218) == [70, 140, 210, 218], "8 steps before the end is not within 7"
    assert evaluated(config, 210) == [70, 140, 210]
    assert evaluated(unbudgeted, 211) == [70, 140, 210, 211], "an end the user chose keeps every evaluation"
    # 170 s usable from step 71, a step 1 s, an evaluation 10 s: 140 steps and three evaluations (140, 210, 211)
    # were all that fit; with 210's left to the end, 146 steps and two (140, 217)
    left = 170 / schedule.BUDGET_MARGIN
    assert fit_to_budget(71, 1.0, left, unbudgeted, eval_seconds=10.0) == 211
    assert fit_to_budget(71, 1.0, left, config, eval_seconds=10.0) == 217


def test_the_refit_comes_after_the_first_evaluation_or_a_fifth_of_the_way():
    fit = BudgetFit(0)
    fit.plan_refit(10, 360, eval_interval=120)
    assert fit.refit_at == 121, "the first evaluation (step 120) comes before half of the way: just after it"
    fit.plan_refit(10, 360, eval_interval=1000)
    assert fit.refit_at == 10 + 70, "no evaluation before half of the way: a fifth of it"
    fit.plan_refit(10, 20, eval_interval=1000)
    assert fit.refit_at == 10 + FIT_STEPS, "never fewer steps than the first fit timed"


def test_a_budget_fixes_where_the_schedule_ends_and_the_run_fills_it(workspace, corpus, budgeted, monkeypatch):
    machine = FakeMachine(1.0, monkeypatch, eval_seconds=3.0)
    finished, events = train(workspace, budgeted)
    run = RunStore(workspace).resolve(finished.run_id)
    fitted = run.read_config()["schedule"]
    first_at = FIT_SKIP_STEPS + FIT_STEPS
    log = run.file("train.log").read_text()
    first = [line for line in log.splitlines() if "schedule: 1,000.0 ms a step (steps 3-10), so" in line]
    assert len(first) == 1 and "(timed again at step 21)" in first[0], "the first evaluation is at step 20"
    # the refit: steps 3-21 took a fake second each; the evaluation at step 20, its 3 s taken out of the pace
    assert fitted["refit"] is True and fitted["fitted_at_step"] == 21 > first_at
    assert fitted["seconds_per_step"] == 1.0 and fitted["eval_seconds"] == 3.0 and fitted["max_minutes"] == 1.0
    # of the minute, 21 steps and the evaluations at steps 10 and 20 are spent on the machine's clock
    end = fitted["max_iters"]
    assert end == fit_to_budget(21, 1.0, 60.0 - 21 - 2 * 3.0, budgeted, eval_seconds=3.0)
    assert end > budgeted.max_iters, "the budget left room for more steps than max_iters planned"
    assert machine.readings > 2

    assert finished.status == "completed" and finished.step == end
    assert finished.reason == "time budget of 1 min reached"
    assert run.read_config()["settings"]["max_iters"] == 20, "the setting stays as given"
    final = dataclasses.replace(budgeted, max_iters=end)
    steps = [e for e in events if isinstance(e, ev.Step) and e.step > 21]
    assert steps and all(e.max_iters == end for e in steps)
    for e in steps:
        assert e.lr == pytest.approx(lr_at(e.step - 1, final))  # the lr of the step each event reports
    assert lr_at(end - 1, final) < budgeted.min_lr + 0.01 * (budgeted.lr - budgeted.min_lr)
    assert [e.step for e in events if isinstance(e, ev.Eval)][-1] == end
    assert [e.step for e in events if isinstance(e, ev.Eval)] == [
        s for s in range(1, end + 1) if schedule.evaluates_at(s, final)], "evaluated where the fit counted"
    assert (f"schedule: 1,000.0 ms a step (steps 3-21) and 3.0 s an evaluation, so {end:,} steps fit the "
            f"1-minute budget: the cosine ends at step {end:,} instead of") in log


def test_a_slower_machine_than_the_first_steps_said_is_fitted_again(workspace, corpus, budgeted, monkeypatch):
    """The first steps ran fast (say, the machine was idle); from step 11 a step takes 3 fake seconds: the refit
    plans far fewer steps than the first fit, and the run ends there."""
    machine = FakeMachine(1.0, monkeypatch)
    step = TrainingLoop.train_step

    def slower(loop):
        step(loop)
        if loop.state.step > FIT_SKIP_STEPS + FIT_STEPS:
            machine.now += 2.0

    monkeypatch.setattr(TrainingLoop, "train_step", slower)
    finished, _ = train(workspace, budgeted)
    fitted = RunStore(workspace).resolve(finished.run_id).read_config()["schedule"]
    pace = (8 * 1.0 + 11 * 3.0) / 19
    assert fitted["refit"] and fitted["seconds_per_step"] == pytest.approx(pace, abs=1e-6)
    spent = 10 * 1.0 + 11 * 3.0  # steps 1-10, then 11-21
    assert fitted["max_iters"] == fit_to_budget(21, pace, 60.0 - spent, budgeted, eval_seconds=0.0)
    assert fitted["max_iters"] < fit_to_budget(10, 1.0, 50.0, budgeted), "fewer than the first fit planned"
    assert finished.step == fitted["max_iters"]


def test_a_resume_keeps_the_schedule_fitted_when_the_run_started(workspace, corpus, budgeted, monkeypatch):
    FakeMachine(1.0, monkeypatch)
    stopped, _ = train(workspace, budgeted, stop_at_eval=20)
    run = RunStore(workspace).resolve(stopped.run_id)
    end = run.read_config()["schedule"]["max_iters"]
    assert stopped.status == "stopped" and stopped.step == 20 < end

    slower = FakeMachine(10.0, monkeypatch)  # a busier machine now: fitting again would give far fewer steps
    resumed, events = train(workspace, None, resume=stopped.run_id)
    assert slower.readings == 0, "nothing is timed again"
    assert resumed.status == "completed" and resumed.step == end
    assert [e.max_iters for e in events if isinstance(e, ev.Started)] == [end]
    assert run.read_config()["schedule"]["max_iters"] == end
    assert f"schedule: ends at step {end:,}, as fitted to the 1-minute budget" in run.file("train.log").read_text()


def test_a_resume_with_another_budget_fits_again(workspace, corpus, budgeted, monkeypatch):
    FakeMachine(1.0, monkeypatch)
    stopped, _ = train(workspace, budgeted, stop_at_eval=20)
    first = RunStore(workspace).resolve(stopped.run_id).read_config()["schedule"]
    resumed, _ = train(workspace, None, resume=stopped.run_id, overrides={"max_minutes": "0.5"})
    again = RunStore(workspace).resolve(stopped.run_id).read_config()["schedule"]
    assert again["max_minutes"] == 0.5 and again["refit"] and again["fitted_at_step"] > 20 + FIT_SKIP_STEPS + FIT_STEPS
    log = RunStore(workspace).resolve(stopped.run_id).file("train.log").read_text()
    assert f"(steps {20 + FIT_SKIP_STEPS + 1}-{20 + FIT_SKIP_STEPS + FIT_STEPS}), so" in log, "timed from the resume"
    assert again["max_iters"] < first["max_iters"] and resumed.step == again["max_iters"]


def test_without_a_budget_nothing_is_timed_and_max_iters_holds(workspace, corpus, budgeted, monkeypatch):
    clock = FakeMachine(1.0, monkeypatch)
    finished, _ = train(workspace, dataclasses.replace(budgeted, max_minutes=0.0))
    run = RunStore(workspace).resolve(finished.run_id)
    assert clock.readings == 0 and "schedule" not in run.read_config()
    assert finished.step == 20 and finished.reason == "reached max_iters"
    assert "schedule:" not in run.file("train.log").read_text()


def test_another_rank_takes_the_schedule_rank_0_fitted_when_resuming(workspace, corpus, budgeted, monkeypatch):
    """A resumed run's other ranks get the fitted end from rank 0 (which read config.json), so every rank stops
    at the same step and none times anything."""
    from gptui.core.data import TokenizerSpec, prepare
    from gptui.core.distributed import Dist

    FakeMachine(1.0, monkeypatch)
    stopped, _ = train(workspace, budgeted, stop_at_eval=10)
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

    clock = FakeMachine(10.0, monkeypatch)
    finished = TrainJob(workspace, None, None, dist=SecondRank()).run()
    assert clock.readings == 0 and finished.step == schedule["max_iters"]
