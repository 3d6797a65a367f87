"""The Tokens view at 120x40 and at 80x24: a passage of a prepared corpus with the cursor on a token, and the most
frequent tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptui.tui.app import make_app
from tests.functional.conftest import wait_for
from tests.functional.snapshots.test_snapshots import settle
from tests.functional.test_tokens_view import SMALL_BPE, prepared

SIZES = {"wide": (120, 40), "small": (80, 24)}


@pytest.mark.parametrize("size", SIZES)
def test_tokens_view(home: Path, size: str, snap_compare) -> None:
    prepared(home, SMALL_BPE)

    async def run_before(pilot) -> None:
        from gptui.tui.widgets.tokens import TokenText

        app = pilot.app
        await settle(pilot)
        app.corpus_tab.set_tokenizer_values(SMALL_BPE)
        await pilot.press("t")
        grid = app.screen.query_one(TokenText)
        await wait_for(pilot, lambda: bool(grid.ids), "the passage")
        await pilot.press("down", "right", "right", "right", "f")
        await settle(pilot)

    assert snap_compare(make_app(home, poll=False), terminal_size=SIZES[size], run_before=run_before)
