"""Global options (`--home`, `--debug`) work before or after the subcommand: `gptui runs --home DIR`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ENV, assert_one_line_error


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptui", *args], capture_output=True, text=True, timeout=120,
                          env=ENV, cwd=cwd)


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    (home / "inputs").mkdir(parents=True)
    (home / "inputs" / "mine.txt").write_text("hello there\n", encoding="utf-8")
    return home


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """The current folder of the command: it must stay untouched when --home names another."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("where", ["before", "after"])
def test_home_before_or_after_the_subcommand(home, elsewhere, where):
    args = ["--home", str(home), "corpora", "--json"] if where == "before" else ["corpora", "--json", "--home", str(home)]
    result = run(elsewhere, *args)
    assert result.returncode == 0, result.stderr
    assert [c["name"] for c in json.loads(result.stdout)] == ["mine"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("where", ["before", "after"])
def test_runs_with_home_before_or_after(home, elsewhere, where):
    args = ["--home", str(home), "runs"] if where == "before" else ["runs", "--home", str(home)]
    result = run(elsewhere, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no runs in {home / 'models'}"


def test_home_after_the_subcommand_wins_over_before(home, elsewhere, tmp_path):
    result = run(elsewhere, "--home", str(tmp_path / "other"), "corpora", "--json", "--home", str(home))
    assert [c["name"] for c in json.loads(result.stdout)] == ["mine"]


def test_an_empty_home_after_the_subcommand_is_one_line(elsewhere):
    assert_one_line_error(run(elsewhere, "runs", "--home", ""), 2, "--home needs a folder")


def test_debug_after_the_subcommand_shows_the_traceback(home, elsewhere):
    plain = run(elsewhere, "generate", "--run", "nope", "--home", str(home))
    assert_one_line_error(plain, 2, "no run 'nope'")
    debug = run(elsewhere, "generate", "--run", "nope", "--home", str(home), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RunNotFound" in debug.stderr
