"""The Train tab's log shows each line by its kind (the record says what it is, not its wording): a warning and
an error stand out, an evaluation is bold, the settings header recedes; lines of a kind never seen show plainly. A
line longer than the log is wide wraps at the log's own width, every word of it on screen."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from rich.style import Style
from textual.widgets import RichLog, TabbedContent

from gptui.core import events as ev
from gptui.tui.app import make_app
from gptui.tui.formatting import LOG_STYLES
from tests.functional.conftest import TINY, on_runs_tab, started, wait_for

LONG = ("warning: the tensorboard tracker failed (OSError: No space left on device); training goes on without it, "
        "and the run folder keeps every record")


def test_the_train_log_styles_each_line_by_its_kind_and_wraps_at_its_width(home: Path) -> None:
    lines = {kind: f"a line of kind {kind}" for kind in ev.LOG_KINDS}

    async def go() -> dict[str, Style | None]:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f3")
            for kind, line in lines.items():
                app.train_tab.show_event(ev.Log(line, kind))
            app.train_tab.show_event(ev.Log("a line of a newer kind", "debug"))
            app.train_tab.show_event(ev.Log(LONG, "warning"))
            await pilot.pause()
            log = app.train_tab.query_one("#train-log", RichLog)
            width = log.scrollable_content_region.width
            assert width < len(LONG)
            wrapped = ["".join(segment.text for segment in strip).rstrip() for strip in log.lines[-3:]]
            assert all(len(line) <= width for line in wrapped), (width, wrapped)
            assert " ".join(wrapped).split()[-len(LONG.split()):] == LONG.split()
            shown = {}
            for strip in log.lines:
                text = "".join(segment.text for segment in strip).rstrip()
                styles = [segment.style for segment in strip if segment.text.strip()]
                shown[text] = styles[0] if styles else None
            return shown

    shown = asyncio.run(go())
    assert set(lines.values()) | {"a line of a newer kind"} <= set(shown)
    assert set(LOG_STYLES) == set(ev.LOG_KINDS), "every kind the trainer writes has a look"
    warning, error = shown[lines["warning"]], shown[lines["error"]]
    assert warning.bold and warning.color.name == "yellow"
    assert error.bold and error.color.name == "red"
    assert shown[lines["evaluation"]].bold and shown[lines["setting"]].dim and shown[lines["sample"]].italic
    for plain in (lines["info"], "a line of a newer kind"):
        style = shown[plain]
        assert style is None or not (style.bold or style.dim or style.italic or style.color), plain


def test_the_runs_tab_log_shows_a_runs_lines_by_kind_and_an_older_runs_log_as_written(home: Path) -> None:
    from gptui.core.config import Config, apply_overrides, check
    from gptui.core.runs import RunStore
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    config = check(apply_overrides(Config(), {**TINY, "max_iters": 6, "eval_interval": 3, "sample_interval": 0}))
    typed = TrainJob(Workspace(home), "small", config, name="typed").run().run_id
    older = TrainJob(Workspace(home), "small", config, name="older").run().run_id
    run = RunStore(Workspace(home)).resolve(older)  # as written before log lines were records
    metrics = run.file("metrics.jsonl")
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["type"] in ("train", "eval")]
    metrics.write_text("\n".join(kept) + "\n")

    async def log_of(run_id: str) -> list[tuple[str, Style | None]]:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await on_runs_tab(pilot, run_id)
            app.query_one("#runs-detail", TabbedContent).active = "runs-log-pane"
            log = app.query_one("#runs-log", RichLog)
            await wait_for(pilot, lambda: any("finished:" in "".join(s.text for s in strip) for strip in log.lines),
                           "the run's log")
            return [("".join(s.text for s in strip).rstrip(),
                     next((s.style for s in strip if s.text.strip()), None)) for strip in log.lines]

    lines = asyncio.run(log_of(typed))
    evaluations = [style for text, style in lines if re.search(r"\d\d:\d\d:\d\d  step +3  train", text)]
    assert evaluations and evaluations[0].bold, "an evaluation line, with its time, in bold"
    finished = [style for text, style in lines if "  finished: completed" in text]
    assert finished and finished[0].bold and finished[0].color.name == "green"

    plain = asyncio.run(log_of(older))
    assert [text for text, _ in plain if "  step      3  train" in text], "train.log's own lines"
    assert all(style is None or not style.bold for _, style in plain)
