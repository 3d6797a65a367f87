"""The Generate tab on the fast decode path: the precision dropdown, text that streams in and equals the engine's,
and a precision the machine lacks reported in one line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from textual.widgets import Input, Select

from gptui.core.config import Config
from gptui.core.generate import DecodeStats, load_model, stream_text
from gptui.core.runs import RunStore
from gptui.core.sampling import SamplingSettings
from gptui.core.trainer import TrainJob
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from tests.functional.conftest import TINY, started, wait_for


@pytest.fixture
def trained_home(home: Path) -> tuple[Path, str]:
    result = TrainJob(Workspace(home), "small", Config(**{**TINY, "sample_interval": 0})).run()
    assert result.status == "completed"
    return home, result.run_id


async def choose_precision(pilot, value: str) -> None:
    """Open the dropdown and pick `value` with the keyboard, as a person would."""
    select = pilot.app.generate_tab.query_one("#gen-dtype", Select)
    select.focus()
    await pilot.press("enter")
    options = [v for _, v in select._options]
    current = options.index(select.value)
    target = options.index(value)
    await pilot.press(*(["down"] * (target - current) if target >= current else ["up"] * (current - target)))
    await pilot.press("enter")
    await pilot.pause()
    assert select.value == value


def engine_reply(home: Path, run_id: str, prompt: str) -> tuple[str, int]:
    """The engine's reply to `prompt` with send()'s settings, and the tokens it took: 40, or fewer when the
    (barely trained) model ends the text with its end-of-text token."""
    stats = DecodeStats()
    loaded = load_model(RunStore(Workspace(home)).resolve(run_id), "cpu", "float32")
    text = "".join(stream_text(loaded, prompt, SamplingSettings(max_new_tokens=40, temperature=0.8, seed=7),
                               stats=stats))
    return text, stats.tokens


async def send(pilot, prompt: str, max_tokens: str = "40", seed: str = "7") -> None:
    gen = pilot.app.generate_tab
    gen.query_one("#gen-max-tokens", Input).value = max_tokens
    gen.query_one("#gen-seed", Input).value = seed
    gen.query_one("#gen-prompt", Input).focus()
    await pilot.press(*prompt)
    await pilot.press("enter")


def test_the_reply_streams_in_and_equals_the_engines_text(trained_home, monkeypatch) -> None:
    import time

    import gptui.core.generate as generate
    import gptui.tui.tabs.generate as tab

    home, run_id = trained_home
    real = generate.stream_samples

    def paced(*args, **kwargs):  # a tiny model is too quick to watch: slow each piece a little
        for item in real(*args, **kwargs):
            time.sleep(0.01)
            yield item

    monkeypatch.setattr(generate, "stream_samples", paced)
    monkeypatch.setattr(tab, "STREAM_SECONDS", 0.0)
    shown: list[int] = []  # the reply's length each time the screen got more of it
    append = tab.Turn.append
    monkeypatch.setattr(tab.Turn, "append", lambda turn, piece: (append(turn, piece), shown.append(len(turn.text))))

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == run_id, "the run to be offered")
            assert gen.query_one("#gen-dtype", Select).value == "auto"
            await choose_precision(pilot, "float32")
            await send(pilot, "ROMEO:")
            await wait_for(pilot, lambda: not gen.generating and len(gen.turns) == 2, "the reply")
            reply = gen.turns[-1].text
            assert len(shown) >= 3 and shown == sorted(shown), f"the reply did not stream in: {shown}"
            expected, tokens = engine_reply(home, run_id, "ROMEO:")
            assert reply == expected
            assert re.fullmatch(rf"{tokens} tokens · [\d,]+ tok/s \(float32, cpu\)", gen.turns[-1].border_subtitle)
            # a second prompt reuses the loaded model and its decoder
            decoder = gen._loaded._decoder
            await send(pilot, "JULIET:")
            await wait_for(pilot, lambda: not gen.generating and len(gen.turns) == 4, "the second reply")
            assert gen._loaded._decoder is decoder
            assert gen.turns[-1].text == engine_reply(home, run_id, "JULIET:")[0]

    asyncio.run(go())


def test_a_precision_the_machine_lacks_is_one_notification(trained_home, monkeypatch) -> None:
    import gptui.core.device as device

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    home, run_id = trained_home

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == run_id, "the run to be offered")
            await choose_precision(pilot, "bfloat16")
            await send(pilot, "ROMEO:")
            await wait_for(pilot, lambda: not gen.generating and len(gen.turns) == 2, "the refusal")
            messages = [n.message for n in app._notifications]
            assert any("bfloat16" in m and "float32" in m for m in messages), messages
            assert "bfloat16" in gen.turns[-1].text
            # float32 then works in the same session
            await choose_precision(pilot, "float32")
            await send(pilot, "ROMEO:")
            await wait_for(pilot, lambda: not gen.generating and len(gen.turns) == 4, "the reply")
            assert gen.turns[-1].text == engine_reply(home, run_id, "ROMEO:")[0]

    asyncio.run(go())
