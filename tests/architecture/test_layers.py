"""The layering the style guide asks for, checked on the source: the engine never imports the UI or Textual,
and the UI never imports torch itself (it drives the engine, which loads torch lazily)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gptui"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules_under("core"), ids=lambda p: p.name)
def test_the_engine_never_imports_the_ui(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] in {"textual", "textual_plotext", "rich"}
           or m.startswith("gptui.tui") or m == "gptui.cli"}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", modules_under("tui"), ids=lambda p: p.name)
def test_the_ui_never_imports_torch_itself(path):
    bad = {m for m in imported_modules(path) if m.split(".")[0] == "torch"}
    assert not bad, f"{path.name} imports {bad}"


TORCH_FREE_ENGINE = ["config", "data", "errors", "events", "finetune", "fsio", "runs", "sampling", "tokenizer",
                     "workspace", "follow", "launch", "vocabulary", "request"]


@pytest.mark.parametrize("name", TORCH_FREE_ENGINE)
def test_engine_modules_the_ui_imports_at_startup_do_not_load_torch(name):
    """Checked in a fresh interpreter: importing these must not pull torch in (the first frame depends on it)."""
    import subprocess
    import sys

    code = f"import sys, gptui.core.{name}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_app_starts_without_numpy_or_torch():
    """The first frame waits for every import of gptui.tui.app: numpy (~0.1 s here) and torch come later, with
    the tabs' workers and actions that need them."""
    import subprocess
    import sys

    code = "import sys, gptui.tui.app; print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
