"""`gptui inspect`: the per-token table and JSON lines, the attention matrix, and bad input as one line, exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support import assert_one_line_error, gptui

from gptui.cli import main
from tests.model_runs import write_model_run

RUN = "20240102-030405-inspect"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("inspect-cli")
    write_model_run(home, RUN, {"n_layer": 2, "n_head": 2})
    return home


def run(home: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), "inspect", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_score_each_token_then_summarise(home, capsys) -> None:
    code, out, err = run(home, capsys, "20240102", "--text", "First Citizen:\nAll", "--top", "3", "--json")
    assert code == 0, err
    *tokens, summary = [json.loads(line) for line in out.splitlines()]
    assert "".join(t["token"] for t in tokens) == "First Citizen:\nAll"
    assert tokens[0] == {"token": "F", "id": tokens[0]["id"], "p": None, "rank": None, "top": [], "entropy": None}
    for t in tokens[1:]:
        assert 0 < t["p"] <= 1 and t["rank"] >= 1 and t["entropy"] > 0 and len(t["top"]) == 3
        assert [p for _, p in t["top"]] == sorted((p for _, p in t["top"]), reverse=True)
        assert (t["rank"] == 1) == (t["top"][0][0] == t["token"])
    bits = sum(-math.log2(t["p"]) for t in tokens[1:])
    assert summary == {"tokens": len(tokens), "bytes": len(tokens) - 1, "bits_per_byte": pytest.approx(bits / 17)}


def test_the_plain_table_is_readable(home, tmp_path, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("First Citizen: speak " * 5, encoding="utf-8")  # 105 tokens: longer than block_size 32
    code, out, err = run(home, capsys, RUN, "--text-file", str(text))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["#", "token", "id", "p", "rank", "entropy", "likeliest", "instead"]
    assert lines[1].split()[:2] == ["0", '"F"'] and lines[1].split()[3:] == ["—", "—", "—"]
    assert lines[-1].startswith("105 tokens, 104 bytes scored") and "bits per byte" in lines[-1]
    assert "sliding window of 32 tokens moving 16" in lines[-1]
    assert len(lines) == 107


def test_attention_prints_the_matrix(home, capsys) -> None:
    code, out, err = run(home, capsys, RUN, "--text", "All: Speak", "--attention", "1.0", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["layer"], data["head"], data["tokens"]) == (1, 0, list("All: Speak"))
    for i, row in enumerate(data["weights"]):
        assert sum(row) == pytest.approx(1, abs=1e-5) and all(w == 0 for w in row[i + 1:])
    code, out, err = run(home, capsys, RUN, "--text", "All", "--attention", "0.mean")
    assert code == 0, err
    lines = out.splitlines()
    assert "the mean over the heads" in lines[0] and lines[1].split() == ['"A"', '"l"', '"l"']
    assert lines[2].split() == ['"A"', "1.0000", "0.0000", "0.0000"]


@pytest.mark.parametrize("args, why", [
    (["nope", "--text", "x"], "no run 'nope'"),
    ([RUN, "--text", ""], "the text is empty"),
    ([RUN, "--text", "日本"], "never seen: '日', '本'"),
    ([RUN, "--text", "All", "--attention", "2.0"], "layer 2 is out of range: the model has 2"),
    ([RUN, "--text", "All", "--attention", "0.5"], "head 5 is out of range"),
    ([RUN, "--text", "All", "--attention", "one"], "LAYER.HEAD"),
    ([RUN, "--text", "All", "--top", "1000"], "--top must be between 0 and 100"),
    ([RUN, "--text-file", "/nonexistent/file.txt"], "cannot read text file"),
])
def test_bad_input_is_one_line_and_exit_2(home, capsys, args, why) -> None:
    code, out, err = run(home, capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and why in err, err


def test_as_a_user_runs_it(home) -> None:
    done = gptui(home, "inspect", RUN, "--text", "All: Speak", "--top", "2")
    assert done.returncode == 0, done.stderr
    assert "bits per byte" in done.stdout.splitlines()[-1]
    missing = gptui(home, "inspect", RUN)
    assert_one_line_error(missing, 2, "--text")
