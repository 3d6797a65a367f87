"""The Corpus tab with every corpus kind: the listing, the preview of a folder's documents, adding a folder by
path (linked, not copied), Prepare and Cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.widgets import DataTable, Input

from gptui.tui.app import make_app
from tests.functional.conftest import sample_text, started, wait_for


def kinds_home(home: Path) -> Path:
    notes = home / "inputs" / "notes"
    (notes / "sub").mkdir(parents=True)
    text = sample_text()
    for i in range(12):
        (notes / ("sub" if i % 2 else ".") / f"{i:02d}.md").write_text(text[i * 3000 : (i + 1) * 3000])
    (notes / "photo.jpg").write_bytes(b"\xff\xd8\xff\0\0")
    rows = "".join(json.dumps({"text": text[i * 500 : (i + 1) * 500]}) + "\n" for i in range(30))
    (home / "inputs" / "rows.jsonl").write_text(rows)
    return home


def test_listing_and_preview_of_every_kind(home: Path) -> None:
    kinds_home(home)

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            table = app.query_one("#corpus-table", DataTable)
            assert table.get_row("notes")[1] == "folder"
            assert table.get_row("notes")[3:5] == ["12", "13"]  # 12 documents (the photo is binary), 13 files
            assert table.get_row("rows")[1] == "JSON Lines" and table.get_row("rows")[3] == "30"
            assert table.get_row("small")[1] == "text"
            table.move_cursor(row=table.get_row_index("notes"))
            await pilot.pause()
            preview = str(app.corpus_tab.query_one("#corpus-preview").content)
            assert preview.startswith(sample_text()[:200]) and "next document" in preview
            assert app.train_tab.corpus == "notes"

    asyncio.run(go())


def test_adding_a_folder_links_it_and_prepare_can_be_cancelled(home: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "letters"
    outside.mkdir()
    text = sample_text()
    for i in range(40):
        (outside / f"{i:02d}.txt").write_text(text[i * 20000 : (i + 1) * 20000])

    async def go() -> None:
        app = make_app(home, poll=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await started(pilot)
            path = app.query_one("#corpus-path", Input)
            path.focus()
            path.value = str(outside)
            await pilot.press("enter")
            await pilot.pause()
            link = home / "inputs" / "letters"
            assert link.is_symlink() and link.resolve() == outside.resolve(), "a folder is linked, not copied"
            assert app.corpus_tab.corpus == "letters"
            assert any("linked into inputs/" in n.message for n in app._notifications)

            corpus = app.corpus_tab
            status = corpus.query_one("#prepare-status")
            await app.workers.wait_for_complete()
            corpus.action_prepare()
            assert not corpus.query_one("#prepare-cancel").disabled
            corpus.cancel_prepare()  # what the Cancel button does, before the worker is far along
            await wait_for(pilot, lambda: "✗" in str(status.content) or "✓" in str(status.content), "prepare")
            assert "cancelled: nothing was cached" in str(status.content)
            assert not any((home / ".cache" / "gptui").iterdir()), "not even part of an entry"
            await pilot.click("#prepare")
            await wait_for(pilot, lambda: "✓" in str(status.content), "a full prepare")
            assert "40 documents" in str(status.content)
            table = app.query_one("#corpus-table", DataTable)
            await wait_for(pilot, lambda: table.get_cell("letters", "cache") == "cached", "the cache status")

    asyncio.run(go())
