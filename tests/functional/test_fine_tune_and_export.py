"""The Runs tab's Export (a path prompt, the folder written in a thread) and Fine-tune on... (pick a corpus, the
Train tab made ready, Start trains a new run from the run's weights and tokenizer), as a person uses them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Static

from gptui.core.config import Config
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from gptui.tui.widgets.modals import PathPromptModal, PickModal
from tests.functional.conftest import TINY, on_runs_tab, wait_for


@pytest.fixture
def trained_home(home: Path) -> tuple[Path, str]:
    """A workspace with one trained run (char tokenizer, on `small`) and a second corpus, `later`, written with
    the same characters."""
    result = TrainJob(Workspace(home), "small", Config(**{**TINY, "sample_interval": 0})).run()
    assert result.status == "completed"
    small = (home / "inputs" / "small.txt").read_text(encoding="utf-8")
    (home / "inputs" / "later.txt").write_text(small[20_000:], encoding="utf-8")
    return home, result.run_id


def test_export_writes_the_folder_and_a_refused_path_keeps_the_dialog(trained_home, tmp_path) -> None:
    home, run_id = trained_home
    target = tmp_path / "exported" / "my-gpt"

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, run_id)
            await pilot.press("e")
            await pilot.pause()
            assert isinstance(app.screen, PathPromptModal)
            field = app.screen.query_one("#answer", Input)
            assert field.value == str(home / "exports" / f"{run_id}-hf")
            field.value = str(target)
            await pilot.press("enter")
            await wait_for(pilot, lambda: any("Exported" in n.message for n in app._notifications),
                           "the export to finish", tries=900)
            assert any(str(target) in n.message and "(GPT2LMHeadModel)" in n.message for n in app._notifications)

            # the same folder again: it is not empty, so the dialog stays open with the reason
            await pilot.press("e")
            await pilot.pause()
            app.screen.query_one("#answer", Input).value = str(target)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, PathPromptModal)
            assert any("is not empty" in n.message for n in app._notifications)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, PathPromptModal)

    asyncio.run(go())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in target.iterdir()}
    assert json.loads((target / "config.json").read_text())["model_type"] == "gpt2"


def test_an_export_the_engine_refuses_is_one_notification(home: Path, tmp_path) -> None:
    """A run whose weights are only a header (the listing fixture) fails in the worker: a notice, no traceback."""
    from tests.functional.conftest import FAKE_RUN, write_fake_run

    write_fake_run(home)

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, FAKE_RUN)
            await pilot.click("#runs-export")
            await pilot.pause()
            app.screen.query_one("#answer", Input).value = str(tmp_path / "out")
            await pilot.press("enter")
            await wait_for(pilot, lambda: any((n.title or "") == "Cannot export" for n in app._notifications),
                           "the refusal", tries=900)
            assert app.is_running

    asyncio.run(go())
    assert not (tmp_path / "out").exists()


def test_fine_tune_on_a_picked_corpus_from_the_runs_tab(trained_home) -> None:
    home, run_id = trained_home

    async def go() -> str:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, run_id)
            await pilot.press("f")
            await pilot.pause()
            assert isinstance(app.screen, PickModal)
            options = app.screen.query_one("#choices", OptionList)
            keys = [options.get_option_at_index(i).id for i in range(options.option_count)]
            assert keys == ["later", "small"] and options.highlighted == keys.index("small")  # the run's own
            await pilot.press("up", "enter")
            await pilot.pause()

            tab = app.train_tab
            assert app.query_one("#tabs").active == "train"
            assert tab.fine_tune_run == run_id and tab.corpus == "later" and app.corpus_tab.corpus == "later"
            assert tab.query_one("#train-fine-tune").display
            assert f"fine-tune from {run_id}" in str(tab.query_one("#train-fine-tune-text", Static).content)
            assert app.model_tab.field("n_embd").raw in (32, "32")  # the run's settings are in the form

            # a shape change blocks Start with the reason; putting it back unblocks it
            app.model_tab.set_values({"n_layer": 2})
            await pilot.pause()
            assert "keeps its model: set n_layer to 1" in tab.blocked_reason()
            app.model_tab.set_values({"n_layer": 1, "max_iters": 10, "eval_interval": 5})
            await pilot.pause()
            assert tab.blocked_reason() is None

            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: tab.run_id is not None and not tab.running, "the fine-tune to finish",
                           tries=900)
            assert tab.stats["status"].startswith("completed")
            return tab.run_id

    new_id = asyncio.run(go())
    run = RunStore(Workspace(home)).resolve(new_id)
    config = run.read_config()
    assert new_id != run_id and config["init_from"] == run_id and config["corpus"] == "later"
    assert config["settings"]["max_iters"] == 10
    assert "fine-tuning: starts from run" in run.file("train.log").read_text(encoding="utf-8")


def test_from_scratch_ends_fine_tune_mode(trained_home) -> None:
    home, run_id = trained_home

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await on_runs_tab(pilot, run_id)
            await pilot.click("#runs-fine-tune")
            await pilot.pause()
            await pilot.press("enter")
            await pilot.pause()
            tab = app.train_tab
            assert tab.fine_tune_run == run_id
            await pilot.click("#train-from-scratch")
            await pilot.pause()
            assert tab.fine_tune_run is None and not tab.query_one("#train-fine-tune").display

    asyncio.run(go())


def test_fine_tune_is_refused_for_a_run_without_weights(home: Path) -> None:
    from tests.functional.conftest import write_fake_run

    run = write_fake_run(home, "20240101-000000-never")
    (run / "model.safetensors").unlink()
    state = json.loads((run / "state.json").read_text())
    (run / "state.json").write_text(json.dumps({**state, "status": "stopped", "step": 0, "best_val_loss": None}))

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, "20240101-000000-never")
            await pilot.press("f")
            await pilot.pause()
            assert not isinstance(app.screen, PickModal)
            assert any("no saved weights to fine-tune from" in n.message for n in app._notifications)
            assert app.train_tab.fine_tune_run is None

    asyncio.run(go())
