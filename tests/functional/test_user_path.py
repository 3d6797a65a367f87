"""The path a person takes: corpus, preset, train, watch, stop, resume, find the run, talk to it, save."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from textual.widgets import DataTable, Input, Select, TabbedContent

from gptui.core.runs import RunStore
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from gptui.tui.widgets.loss_plot import LossPlot
from tests.functional.conftest import TINY, started, wait_for


def test_train_stop_resume_find_generate_save(home: Path) -> None:
    asyncio.run(_user_path(home))


async def _user_path(home: Path) -> None:
    app = make_app(home, poll=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot)
        # the corpus: the only one is selected
        assert app.corpus_tab.corpus == "small"
        assert app.train_tab.corpus == "small"

        # the model: pick a preset, then shrink it through the form
        await pilot.press("f2")
        app.model_tab.query_one("#preset", Select).value = "lecture"
        await pilot.pause()
        assert app.model_tab.field("n_layer").raw == "6"
        app.model_tab.set_values({**TINY, "max_iters": 5000})
        await pilot.pause()
        assert app.model_tab.config is not None, app.model_tab.problems
        assert app.train_tab.config.n_embd == 32

        # train, and watch the numbers and the plot move
        await pilot.press("ctrl+t")
        assert app.query_one("#tabs", TabbedContent).active == "train"
        tab = app.train_tab
        plot = tab.query_one("#train-plot", LossPlot)
        await wait_for(pilot, lambda: plot.point_count("val") >= 1, "a first evaluation")
        assert tab.running and tab.run_id
        assert plot.point_count("train") >= 1
        assert tab.stats["loss"] != "—" and "tok/s" in tab.stats["speed"]
        assert "process" in tab.stats["memory"]
        step_before = tab.query_one("#train-step").content
        await wait_for(pilot, lambda: tab.query_one("#train-step").content != step_before, "the step to advance")
        assert len(tab.query_one("#train-log").lines) > 5
        assert "torch" not in sys.modules or app.workers  # torch arrived with the worker, not at start

        # stop: the run is saved as stopped, and Resume offers it
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not tab.running, "the trainer to stop")
        run_id = tab.run_id
        assert tab.resume_run == run_id
        state = RunStore(Workspace(home)).resolve(run_id).read_state()
        assert state["status"] == "stopped"
        stopped_at = state["step"]

        # resume: it continues from the checkpoint, then stop again
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: tab.stats.get("status") == "training", "the resumed run to start")
        await wait_for(pilot, lambda: plot.point_count("train") > 0 and plot.series["train"][0][-1] > stopped_at,
                       "a step past the checkpoint")
        assert plot.series["train"][0][0] <= stopped_at  # the earlier curve is kept
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not tab.running, "the resumed trainer to stop")

        # the run is in the Runs tab
        await pilot.press("f5")
        app.runs_tab.poll()
        await wait_for(pilot, lambda: run_id in app.query_one("#runs-table", DataTable).rows, "the run listed")
        info = app.runs_tab.info(run_id)
        assert info.status == "stopped" and info.steps > stopped_at

        # open it in Generate, type a prompt, watch text stream in
        app.query_one("#runs-table", DataTable).focus()
        await pilot.press("g")
        await pilot.pause()
        assert app.query_one("#tabs", TabbedContent).active == "generate"
        gen = app.generate_tab
        assert gen.run_id == run_id
        gen.query_one("#gen-max-tokens", Input).value = "40"
        gen.query_one("#gen-seed", Input).value = "7"
        gen.query_one("#gen-prompt", Input).focus()
        await pilot.press(*"ROMEO:")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not gen.generating and len(gen.turns) == 2, "the generation to finish")
        you, model = gen.turns
        assert you.text == "ROMEO:"
        assert len(model.text) > 10, model.text

        # save the transcript: a file with its header, in the run's generations/
        await pilot.press("ctrl+o")
        await pilot.pause()
        saved = list((home / "models" / run_id / "generations").glob("*.txt"))
        assert len(saved) == 1
        text = saved[0].read_text()
        assert f"# run: {run_id}" in text and '# prompt: "ROMEO:"' in text
        assert model.text in text
