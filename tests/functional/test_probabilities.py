"""The Generate tab's probabilities toggle: off, generation streams as before and nothing is scored; on, the
prompt's and the reply's tokens are shaded by the core's probabilities, arrows and the mouse move a token cursor
across the turns, and the side panel shows the alternatives and the entropy under it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Select

import gptui.tui.tabs.generate as generate_tab
from gptui.tui.app import make_app
from tests.functional.conftest import started, wait_for
from tests.model_runs import write_model_run

RUN = "20240102-030405-model"


@pytest.fixture
def model_home(home: Path) -> Path:
    write_model_run(home, RUN, {"n_layer": 2, "n_head": 2})
    return home


async def send(pilot, prompt: str) -> None:
    gen = pilot.app.generate_tab
    gen.query_one("#gen-dtype", Select).value = "float32"  # the trained model's exact logits, as the core's
    gen.query_one("#gen-max-tokens", Input).value = "24"
    gen.query_one("#gen-seed", Input).value = "5"
    gen.query_one("#gen-prompt", Input).focus()
    await pilot.press(*prompt, "enter")
    await wait_for(pilot, lambda: not gen.generating and gen.turns and gen.turns[-1].generated, "the reply")


def core_scores(home: Path, prompt: str, reply: str):
    from gptui.core import inspect
    from gptui.core.generate import load_model
    from gptui.core.runs import Run

    loaded = load_model(Run(home / "models" / RUN), "cpu", "float32")
    tok = loaded.tokenizer
    return inspect.score_ids(loaded.model, tok, tok.encode(prompt) + tok.encode(reply), 8).tokens


def panel(app) -> str:
    return str(app.generate_tab.query_one("#gen-probs-panel").content)


def test_on_the_tokens_are_scored_and_the_cursor_and_panel_follow(model_home: Path, monkeypatch) -> None:
    from gptui.core import inspect

    monkeypatch.setattr(generate_tab, "STREAM_SECONDS", 0.0)
    passes: list[int] = []  # the tokens of each scoring forward pass
    real = inspect.score_ids
    monkeypatch.setattr(inspect, "score_ids", lambda model, tok, ids, top: passes.append(len(ids)) or real(
        model, tok, ids, top))

    async def go() -> None:
        app = make_app(model_home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == RUN, "the run offered")
            gen.query_one("#gen-prompt", Input).focus()
            await pilot.press("ctrl+y")
            assert gen.query_one("#gen-probs", Checkbox).value and gen.query_one("#gen-probs-panel").display
            await send(pilot, "First")
            asked, reply = gen.turns
            await wait_for(pilot, lambda: reply.scored, "the reply scored")
            assert passes == [5], "the reply's scores come from the logits it was sampled from: only the prompt's pass"
            expected = core_scores(model_home, "First", reply.generated)
            assert "".join(asked.spans) == "First" and "".join(reply.spans) == reply.generated
            assert [s.p for s in asked.scores + reply.scores] == pytest.approx([s.p for s in expected], abs=1e-6)
            assert asked.scores[0].p is None
            assert gen.query_one("#gen-prompt", Input).has_focus, "a new reply leaves the prompt where it was"
            await pilot.press("shift+tab")
            assert reply.has_focus and reply.cursor == 0

            score = reply.scores[0]
            await wait_for(pilot, lambda: f"{score.p:.4f}" in panel(app), "the panel to show the cursor's token")
            assert f"{score.p:.4f}" in panel(app) and f"{score.entropy:.2f} bits" in panel(app)
            alternatives = [p for _, p in score.top]
            assert len(alternatives) == 8 and alternatives == sorted(alternatives, reverse=True)
            assert f"{alternatives[0]:6.3f}" in panel(app)

            await pilot.press("right", "right")
            assert reply.cursor == 2 and f"rank    {reply.scores[2].rank:,}" in panel(app)
            await pilot.press("home", "left")  # off the reply's start: the prompt's last token
            assert asked.has_focus and asked.cursor == 4 and f"{asked.scores[4].p:.4f}" in panel(app)
            await pilot.press("down")
            assert reply.has_focus and reply.cursor == 0
            await pilot.press("up")
            assert asked.has_focus and asked.cursor == 0
            assert "nothing comes before it" in panel(app)
            await pilot.click(asked, offset=(2 + 3, 1))  # the mouse: the prompt's fourth token, "s"
            assert asked.cursor == 3 and '"s"' in panel(app)

            await pilot.press("ctrl+y")  # off: plain text again, the panel gone, typing goes on
            assert not gen.query_one("#gen-probs-panel").display
            assert gen.query_one("#gen-prompt", Input).has_focus
            assert str(reply.content) == reply.text and not reply.can_focus

    asyncio.run(go())


def test_off_nothing_is_scored_and_switching_on_scores_the_replies_so_far(model_home: Path, monkeypatch) -> None:
    from gptui.core import inspect

    real = inspect.score_exchange
    calls: list[str] = []

    def counted(model, tok, context, prompt, reply, top, recorder=None):
        calls.append(prompt)
        return real(model, tok, context, prompt, reply, top, recorder)

    monkeypatch.setattr(inspect, "score_exchange", counted)

    async def go() -> None:
        app = make_app(model_home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id == RUN, "the run offered")
            await send(pilot, "All")
            await send(pilot, "First")
            await app.workers.wait_for_complete()
            assert calls == [] and not any(t.scored for t in gen.turns)
            assert str(gen.turns[1].content) == gen.turns[1].text

            await pilot.press("ctrl+y")
            await wait_for(pilot, lambda: all(t.scored for t in gen.turns), "every turn scored")
            assert calls == ["All", "First"]
            assert gen.turns[3].has_focus  # the last reply
            expected = core_scores(model_home, "All", gen.turns[1].generated)
            assert [s.p for s in gen.turns[0].scores + gen.turns[1].scores] == pytest.approx(
                [s.p for s in expected], abs=1e-6)

    asyncio.run(go())
