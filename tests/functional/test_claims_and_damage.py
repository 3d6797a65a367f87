"""The TUI's side of issue 21: a resume of a run another process trains is refused with a notice, and the Runs
tab names a damaged run's reason, or resumes it when the resume mends it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gptui.core.claim import claim_run
from gptui.core.runs import RunStore, check_run
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from tests.functional.conftest import TINY, on_runs_tab, started, wait_for


def train(home: Path) -> str:
    from gptui.core.config import Config, apply_overrides, check
    from gptui.core.trainer import TrainJob

    config = check(apply_overrides(Config(), {**TINY, "max_iters": 10, "eval_interval": 5,
                                              "sample_interval": 0}))
    result = TrainJob(Workspace(home), "small", config, name="tui").run()
    # stopped, so the Runs tab offers to resume it
    RunStore(Workspace(home)).resolve(result.run_id).write_state(status="stopped")
    return result.run_id


def notices(app, title: str) -> list[str]:
    return [n.message for n in app._notifications if (n.title or "") == title]


def test_resuming_a_run_another_process_trains_is_refused_with_a_notice(home: Path) -> None:
    run_id = train(home)
    run = RunStore(Workspace(home)).resolve(run_id)
    before = run.file("metrics.jsonl").read_bytes()

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.train_tab.set_resume(run_id)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: notices(app, "Cannot resume"), "the refusal")
            (text,) = notices(app, "Cannot resume")
            assert text.startswith(f"run {run_id} is already training in another process (pid ")
            # the worker posts the refusal just before it ends: the tab stops running a moment later
            await wait_for(pilot, lambda: not app.train_tab.running, "the training worker to end", tries=100)
            assert app.train_tab.stats["status"].startswith("refused: run ")

    with claim_run(run.path, run_id):  # as another terminal's `gptui train --resume` holds it
        asyncio.run(go())
    assert run.file("metrics.jsonl").read_bytes() == before
    assert run.read_state()["status"] == "stopped"


def test_the_runs_tab_names_the_damage_or_resumes_a_run_the_resume_mends(home: Path) -> None:
    run_id = train(home)
    run = RunStore(Workspace(home)).resolve(run_id)
    run.file("tokenizer.json").write_text("{}")

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, run_id)
            await pilot.press("r")
            await pilot.pause()
            assert any(f"Cannot resume {run_id}: it is damaged (tokenizer.json is unreadable)." in n.message
                       for n in app._notifications)
            assert not app.train_tab.running

    asyncio.run(go())
    assert run.read_state()["status"] == "stopped"  # refused: left as it was


def test_the_runs_tab_resumes_a_run_whose_weights_a_resume_rebuilds(home: Path) -> None:
    run_id = train(home)
    run = RunStore(Workspace(home)).resolve(run_id)
    run.file("model.safetensors").write_bytes(b"")
    assert check_run(run) == "model.safetensors is unreadable: truncated weights file"

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, run_id)
            assert app.runs_tab.info(run_id).status == "damaged"
            await pilot.press("r")
            await wait_for(pilot, lambda: app.train_tab.stats.get("status", "").startswith("completed"),
                           "the resume to finish", tries=900)

    asyncio.run(go())
    assert check_run(run) is None
    assert "repaired: model.safetensors was damaged" in run.read_log()
