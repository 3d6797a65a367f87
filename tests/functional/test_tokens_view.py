"""The Tokens view, opened from the Corpus tab (t or its button): a passage of the prepared corpus in its tokens,
the cursor (arrows and the mouse) naming the token's id, a typed text, the vocabulary lists, a run's tokenizer,
and a corpus not prepared yet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from textual.widgets import DataTable, Input, Select, TextArea

from gptui.core.data import TokenizerSpec, prepare
from gptui.core.workspace import Workspace
from gptui.tui.app import make_app
from gptui.tui.widgets.tokens import PASSAGE_TOKENS, TokensScreen, TokenText
from tests.functional.conftest import FAKE_RUN, sample_text, started, wait_for, write_fake_run

SMALL_BPE = {"tokenizer": "bpe", "vocab_size": 300, "split_pattern": "gpt4"}


def prepared(home: Path, settings: dict) -> np.ndarray:
    """small.txt prepared as the Corpus tab's `settings` say; its tokens."""
    spec = TokenizerSpec("char", 0, "") if settings["tokenizer"] == "char" else TokenizerSpec(
        "bpe", settings["vocab_size"], settings["split_pattern"])
    return np.asarray(prepare(home / "inputs" / "small.txt", spec, Workspace(home).cache, workers=1).tokens)


async def open_view(pilot, settings: dict | None = None) -> TokensScreen:
    app = pilot.app
    await started(pilot)
    if settings:
        app.corpus_tab.set_tokenizer_values(settings)
    await pilot.press("t")
    await pilot.pause()
    assert isinstance(app.screen, TokensScreen)
    return app.screen


def line(screen: TokensScreen, which: str) -> str:
    return str(screen.query_one(f"#tok-{which}").content)


def notes(app, severity: str) -> list[str]:
    return [n.message for n in app._notifications if n.severity == severity]


def test_a_passage_of_the_corpus_with_a_cursor_that_names_each_token(home: Path) -> None:
    tokens = prepared(home, {"tokenizer": "char"})
    text = sample_text()[:40_000]

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_view(pilot)  # the tab's settings (bpe) are not the ones it was prepared with
            grid = screen.query_one(TokenText)
            await wait_for(pilot, lambda: "not prepared" in grid.message, "the inline message")
            assert "pick (s) another tokenizer it is prepared with above" in grid.message
            await pilot.press("s")
            select = screen.query_one("#tok-source", Select)
            assert select.expanded  # the menu is open, its list focused
            assert ("small as char", "cache:char-v1") in screen.sources
            await pilot.press("escape")
            select.value = "cache:char-v1"
            await wait_for(pilot, lambda: bool(grid.ids), "the passage")
            assert select.value == "cache:char-v1" and ("small as char", "cache:char-v1") in screen.sources
            grid.focus()
            await pilot.pause()
            assert grid.has_focus and grid.ids == tokens[:PASSAGE_TOKENS].tolist()
            assert "".join(grid.spans) == text[:PASSAGE_TOKENS]  # a char tokenizer: one character a token
            assert "char (" in line(screen, "title") and "1.00 characters and 1.00 bytes per token" in line(
                screen, "stats")

            def at(k: int) -> None:
                assert grid.cursor == k
                assert f'token {k} · id {tokens[k]} · "{text[k]}"' in line(screen, "cursor")

            at(0)
            await pilot.press("right", "right")
            at(2)
            await pilot.press("down")  # "First Citizen:\n" is 15 characters: the same column a line down
            at(15 + 2)
            await pilot.press("up", "left")
            at(1)
            await pilot.click(grid, offset=(4, 1))  # the mouse: line 1's fifth character
            at(15 + 4)
            count = int((tokens == tokens[19]).sum())
            assert f"{count:,}× in the corpus" in line(screen, "cursor")

            await pilot.press("n")  # the next passage
            assert grid.ids == tokens[PASSAGE_TOKENS : 2 * PASSAGE_TOKENS].tolist() and screen.start == PASSAGE_TOKENS
            assert f"tokens {PASSAGE_TOKENS}–" in screen.query_one("#tok-scroll").border_title
            await pilot.press("p")
            assert screen.start == 0

            table = screen.query_one("#tok-vocab", DataTable)
            await pilot.press("f")  # the most frequent characters, with their counts
            commonest = int(np.bincount(tokens).argmax())
            assert table.get_row_at(0)[0] == str(commonest) and "most frequent" in screen.query_one(
                "#tok-vocab-box").border_title
            await pilot.press("slash", *"Citi")
            assert screen.query_one("#tok-search", Input).has_focus and screen.order == "search"
            assert table.row_count == 0  # a char vocabulary has no token "Citi"
            await pilot.press("ctrl+a", "ctrl+k", "C")
            assert [table.get_row_at(0)[1]] == ["C"]
            await pilot.press("escape")
            assert not isinstance(app.screen, TokensScreen)

    asyncio.run(go())


def keys(text: str) -> list[str]:
    return ["enter" if c == "\n" else c for c in text]


def test_typed_text_is_tokenized_as_it_is_typed_and_joins_back_exactly(home: Path) -> None:
    prepared(home, SMALL_BPE)
    typed = "First Citizen:\n\n日本語 🙂 naïve café"

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_view(pilot, SMALL_BPE)
            grid = screen.query_one(TokenText)
            await wait_for(pilot, lambda: bool(grid.ids), "the passage")
            assert "bpe (301 tokens)" in line(screen, "title")
            await pilot.press("ctrl+e", *keys("First Citizen:\n\nAll"))
            tok = screen.tokenizer
            assert grid.ids == tok.encode("First Citizen:\n\nAll") and "".join(grid.spans) == "First Citizen:\n\nAll"
            assert "your text" in screen.query_one("#tok-scroll").border_title
            area = screen.query_one("#tok-text", TextArea)
            for text in (typed, "\ta\r\n\U0001f680"):  # what a paste brings: CJK, emoji, a tab, a carriage return
                area.text = text
                await pilot.pause()
                assert screen.typed == text and "".join(grid.spans) == text and grid.ids == tok.encode(text)
            area.text = typed
            await pilot.pause()
            size = len(typed.encode("utf-8"))
            assert (f"your text: {len(grid.ids)} tokens, {len(typed)} characters, {size} bytes · "
                    f"{len(typed) / len(grid.ids):.2f} characters and {size / len(grid.ids):.2f} bytes per token"
                    ) in line(screen, "stats") and "small: " in line(screen, "stats")
            await pilot.press("ctrl+e", "end")  # to the tokens: the cursor names the last one
            assert grid.has_focus and f"id {grid.ids[-1]} ·" in line(screen, "cursor")
            partial = next(k for k, span in enumerate(grid.spans) if span == "")  # a CJK or emoji byte token
            await pilot.press("home", *["right"] * partial)
            assert "(part of a character)" in line(screen, "cursor")
            area.text = ""  # empty: back to the corpus
            await pilot.pause()
            assert screen.typed is None and "passage" in screen.query_one("#tok-scroll").border_title

    asyncio.run(go())


def test_a_corpus_not_prepared_says_so_and_a_runs_tokenizer_still_works(home: Path) -> None:
    write_fake_run(home)  # its tokenizer: the characters of small.txt

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_view(pilot)
            grid = screen.query_one(TokenText)
            await wait_for(pilot, lambda: "not prepared" in grid.message, "the inline message")
            assert "press Prepare on the Corpus tab" in grid.message and not grid.ids
            await pilot.press("n")
            assert any("No prepared corpus" in m for m in notes(app, "warning"))
            await pilot.press("ctrl+e", *"hello")
            assert [m for m in notes(app, "warning") if "No tokenizer yet" in m] == ["No tokenizer yet: prepare "
                                                                                     "the corpus, or pick a run's "
                                                                                     "tokenizer above."]

            screen.query_one("#tok-source", Select).value = FAKE_RUN
            await wait_for(pilot, lambda: screen.tokenizer is not None, "the run's tokenizer")
            assert f"run {FAKE_RUN} · char (" in line(screen, "title")
            assert grid.ids == screen.tokenizer.encode("hello")  # the text typed before is tokenized now
            assert screen.query_one("#tok-vocab", DataTable).row_count > 0
            await pilot.press("ctrl+e", "f")  # no frequencies: the corpus is not encoded with this tokenizer
            assert any("Frequencies need" in m for m in notes(app, "warning")) and screen.order == "longest"

            await pilot.press("ctrl+e", "ctrl+a", *"日本")  # not among its characters
            errors = notes(app, "error")
            assert any("never seen" in m and "'日'" in m for m in errors)
            assert grid.ids == screen.tokenizer.encode("hello")  # what was shown stays
            screen.query_one("#tok-text", TextArea).text = ""
            await pilot.pause()
            assert "fine-tuning that run on it prepares it" in grid.message

    asyncio.run(go())


def test_the_corpus_tabs_button_opens_it(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.click("#corpus-tokens")
            await pilot.pause()
            assert isinstance(app.screen, TokensScreen) and app.screen.corpus == "small"

    asyncio.run(go())
