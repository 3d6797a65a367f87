"""The Generate tab's run picker follows the workspace: the run just trained in this app is selected (unless the
person picked another one here meanwhile), and runs that other processes write, rename or delete come and go
without a restart."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from textual.widgets import DataTable, Select, TabbedContent

from gptui.tui.app import make_app
from tests.functional.conftest import TINY, started, wait_for, write_fake_run

OLDER = "20240102-030405-older"
NEWER = "20240105-030405-newer"


def earlier_runs(home: Path) -> None:
    write_fake_run(home, OLDER, created="2024-01-02T03:04:05")
    write_fake_run(home, NEWER, seed=1, created="2024-01-05T03:04:05")


def offered(app) -> list[str]:
    """The run ids the picker offers, in its order."""
    return [value for _, value in app.generate_tab.query_one("#gen-run", Select)._options if isinstance(value, str)]


async def pick_run(pilot, run_id: str) -> None:
    """Open the run picker and choose `run_id` with the keyboard, as a person would."""
    select = pilot.app.generate_tab.query_one("#gen-run", Select)
    select.focus()
    await pilot.press("enter")
    runs = offered(pilot.app)
    steps = runs.index(run_id) - runs.index(str(select.value))
    await pilot.press(*(["down"] * steps if steps >= 0 else ["up"] * -steps))
    await pilot.press("enter")
    await pilot.pause()
    assert select.value == run_id


async def train(pilot, **settings) -> None:
    app = pilot.app
    app.model_tab.set_values({**TINY, "sample_interval": 0, **settings})
    await pilot.pause()
    assert app.model_tab.config is not None, app.model_tab.problems
    await pilot.press("ctrl+t")
    # the run exists once it has started; a tiny run may already have ended when the condition is next looked at
    await wait_for(pilot, lambda: app.train_tab.run_id is not None, "training to start", tries=1800)


def test_after_training_the_generate_tab_selects_the_new_run(home: Path) -> None:
    earlier_runs(home)

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == NEWER, "the newest earlier run to be offered")
            await train(pilot)
            tab = app.train_tab
            await wait_for(pilot, lambda: not tab.running, "the run to finish", tries=900)
            assert tab.stats["status"].startswith("completed"), tab.stats["status"]
            await wait_for(pilot, lambda: tab.run_id in gen.runs, "the new run to be listed")
            await pilot.press("f4")
            await pilot.pause()
            assert gen.run_id == tab.run_id
            assert gen.query_one("#gen-run", Select).value == tab.run_id
            assert offered(app) == [tab.run_id, NEWER, OLDER]

            # the Runs tab's "g" still opens the run chosen there
            await pilot.press("f5")
            table = app.query_one("#runs-table", DataTable)
            await wait_for(pilot, lambda: OLDER in table.rows, "the runs listed")
            table.focus()
            table.move_cursor(row=table.get_row_index(OLDER))
            await pilot.press("g")
            await pilot.pause()
            assert app.query_one("#tabs", TabbedContent).active == "generate"
            assert gen.run_id == OLDER and gen.query_one("#gen-run", Select).value == OLDER

    asyncio.run(go())


def test_a_users_own_choice_is_not_overridden_by_the_run_that_ends(home: Path) -> None:
    earlier_runs(home)

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == NEWER, "the newest earlier run to be offered")
            await train(pilot, max_iters=100_000, eval_interval=50_000)
            tab = app.train_tab
            await pilot.press("f4")
            await pick_run(pilot, OLDER)  # while the new run trains
            await pilot.press("f3")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: not tab.running, "the trainer to stop", tries=900)
            assert tab.stats["status"].startswith("stopped"), tab.stats["status"]
            await wait_for(pilot, lambda: tab.run_id in gen.runs, "the stopped run to be listed")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert gen.run_id == OLDER
            assert gen.query_one("#gen-run", Select).value == OLDER

    asyncio.run(go())


def test_runs_other_processes_write_rename_or_delete_come_and_go(home: Path, monkeypatch) -> None:
    import gptui.tui.tabs.runs as runs_tab

    monkeypatch.setattr(runs_tab, "POLL_SECONDS", 0.2)  # the app's own timer, only quicker
    write_fake_run(home, OLDER, created="2024-01-02T03:04:05")

    async def go() -> None:
        app = make_app(home)  # polling on: nothing in this test asks for a new listing
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == OLDER, "the earlier run to be offered")

            write_fake_run(home, NEWER, seed=1, created="2024-01-05T03:04:05")  # as `gptui train` elsewhere would
            await wait_for(pilot, lambda: NEWER in offered(app), "the run written elsewhere to appear")
            assert offered(app) == [NEWER, OLDER]
            assert gen.run_id == OLDER, "a run finished elsewhere does not take the place of the one chosen"

            renamed = "20240105-030405-renamed"
            (home / "models" / NEWER).rename(home / "models" / renamed)
            await wait_for(pilot, lambda: NEWER not in offered(app), "the renamed run to leave")
            await wait_for(pilot, lambda: renamed in offered(app), "the new name to appear")

            shutil.rmtree(home / "models" / OLDER)  # the chosen run, deleted elsewhere
            await wait_for(pilot, lambda: OLDER not in offered(app), "the deleted run to leave")
            assert gen.run_id == renamed and gen.query_one("#gen-run", Select).value == renamed

    asyncio.run(go())
