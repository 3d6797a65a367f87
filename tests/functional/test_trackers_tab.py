"""Trackers from the app: the Model form's Tracking group starts a run that also logs to TensorBoard and W&B (from
the training worker thread), and a tracker whose library is missing fails the start in one line, leaving no run."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import psutil
import pytest

from gptui.core.runs import RunStore
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from tests.functional.conftest import TINY, started, wait_for


def _offline_wandb(home: Path, monkeypatch) -> None:
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (home / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(home / "netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / "wandb-home" / name.lower()))


def _train(home: Path, settings: dict) -> str:
    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            app.model_tab.set_values({**TINY, **settings})
            await pilot.pause()
            assert app.model_tab.config is not None, app.model_tab.problems
            await pilot.press("ctrl+t")
            tab = app.train_tab
            await wait_for(pilot, lambda: tab.stats.get("status", "").startswith(("completed", "failed")),
                           "the run to end", tries=600)
            await wait_for(pilot, lambda: not tab.running, "the worker to end")
            return tab.stats["status"]

    return asyncio.run(go())


@pytest.mark.slow
def test_the_tracking_group_logs_a_run_to_tensorboard_and_wandb(home: Path, monkeypatch) -> None:
    _offline_wandb(home, monkeypatch)
    status = _train(home, {"trackers": "tensorboard,wandb", "max_iters": 10})
    assert status.startswith("completed"), status
    (run,) = RunStore(Workspace(home)).runs()
    assert run.read_config()["settings"]["trackers"] == "tensorboard,wandb"
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert "warning:" not in run.file("train.log").read_text()
    assert not [p for p in psutil.Process().children(recursive=True) if "wandb" in p.name().lower()]


def test_a_missing_tracker_library_fails_the_start_in_one_line(home: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    status = _train(home, {"trackers": "wandb"})
    assert status.startswith("failed: trackers=wandb needs wandb") and "gptui[track]" in status
    assert not RunStore(Workspace(home)).runs()
