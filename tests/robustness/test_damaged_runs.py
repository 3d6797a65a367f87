"""Each damaged file against every command (issue 21): `runs` names the damage, and generate, export, resume
and --init-from refuse the run with the same one line and exit 1; a resume mends what a sound checkpoint
rebuilds (state.json, the weights) instead of completing over it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from gptui.cli import main
from gptui.core.runs import RunStore, check_run
from gptui.core.workspace import Workspace


@pytest.fixture(scope="module")
def source(tmp_path_factory, make_corpus_text, tiny_overrides):
    """A workspace with a trained tiny run (12 steps) and, for its weights, a run of another shape."""
    from gptui.core.config import apply_overrides, check, preset_config
    from gptui.core.trainer import TrainJob

    ws = Workspace(tmp_path_factory.mktemp("damaged")).ensure()
    (ws.inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    overrides = {**tiny_overrides, "max_iters": 12, "eval_interval": 6, "sample_interval": 0}
    config = check(apply_overrides(preset_config("tiny-classic"), overrides))
    run_id = TrainJob(ws, "tiny", config, name="victim").run().run_id
    other_id = TrainJob(ws, "tiny", dataclasses.replace(config, n_layer=2), name="other").run().run_id
    return ws, run_id, other_id


@pytest.fixture
def damaged_home(source, tmp_path):
    """A private copy of the workspace, so each test damages its own run."""
    ws, run_id, other_id = source
    home = tmp_path / "home"
    shutil.copytree(ws.home, home, ignore=shutil.ignore_patterns(".cache"))
    return home, RunStore(Workspace(home)).resolve(run_id), home / "models" / other_id


def _settings(**changes):
    def damage(run, other):
        config = json.loads(run.file("config.json").read_text())
        config["settings"].update(changes)
        run.file("config.json").write_text(json.dumps(config))
    return damage


def _write(name: str, data: bytes):
    return lambda run, other: run.file(name).write_bytes(data)


# damage -> (what it does, the reason every command gives, whether a resume mends it)
DAMAGES = {
    "garbage config": (_write("config.json", b"{not json"), "config.json is not valid JSON", False),
    "n_head 5 for n_embd 32": (
        _settings(n_head=5), "config.json has invalid settings: n_embd (32) must be divisible by n_head (5)",
        False),
    "n_embd not a number": (
        _settings(n_embd="wide"),
        "config.json has invalid settings: n_embd must be a whole number, not 'wide'", False),
    "block_size 999999": (_settings(block_size=999999),
                          "config.json has invalid settings: block_size must be at most 32768", False),
    "mlp no longer matches the weights": (
        _settings(mlp="swiglu"), "model.safetensors does not match config.json", False),
    "garbage tokenizer": (
        _write("tokenizer.json", b"\xff\xfe garbage \x00"), "tokenizer.json is unreadable", False),
    "empty-object tokenizer": (_write("tokenizer.json", b"{}"), "tokenizer.json is unreadable", False),
    "garbage checkpoint": (_write("checkpoint.pt", b"garbage"), "checkpoint.pt is unreadable", False),
    "garbage state": (_write("state.json", b"{{{"), "state.json is unreadable", True),
    "empty state": (_write("state.json", b""), "state.json is unreadable", True),
    "state with a word for a step": (_write("state.json", b'{"status": "completed", "step": "x"}'),
                                     "state.json is unreadable", True),
    "emptied weights": (_write("model.safetensors", b""), "model.safetensors is unreadable", True),
    "another shape's weights": (lambda run, other: shutil.copy(other / "model.safetensors", run.file(
        "model.safetensors")), "model.safetensors does not match config.json", True),
}


def run_cli(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", DAMAGES)
def test_every_command_names_the_damage_in_one_line_and_exits_1(damaged_home, capsys, case):
    home, run, other = damaged_home
    damage, reason, mended = DAMAGES[case]
    damage(run, other)

    code, out, _ = run_cli(capsys, home, "runs", "--json")
    listed = {r["id"]: r for r in json.loads(out)}[run.id]
    assert code == 0 and listed["status"] == "damaged" and reason in listed["damaged"], listed
    code, out, _ = run_cli(capsys, home, "runs")
    assert f"damaged ({listed['damaged']})" in out

    expected = f"gptui: error: run {run.id} is damaged: {listed['damaged']}"
    commands = {
        "generate": ["generate", "--run", run.id, "--max-new-tokens", "3"],
        "export": ["export", run.id, "--out", str(home.parent / "exported")],
        "init-from": ["train", "--input", "tiny", "--init-from", run.id],
    }
    if not mended:
        commands["resume"] = ["train", "--resume", run.id, "--set", "max_iters=18"]
    for name, args in commands.items():
        code, out, err = run_cli(capsys, home, *args)
        assert (code, one_line(err)) == (1, expected), name
        assert out == "", name
    assert not (home.parent / "exported").exists()
    assert len(RunStore(Workspace(home)).runs()) == 2, "a refused fine-tune made a run"


@pytest.mark.parametrize("case", [c for c, (_, _, mended) in DAMAGES.items() if mended])
def test_a_resume_rebuilds_state_and_weights_from_a_sound_checkpoint(damaged_home, capsys, case):
    home, run, other = damaged_home
    damage, _, _ = DAMAGES[case]
    damage(run, other)
    code, out, err = run_cli(capsys, home, "train", "--resume", run.id, "--set", "max_iters=18")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 18
    assert "repaired:" in err and "repaired:" in run.read_log()
    assert check_run(run) is None
    assert run.read_state()["status"] == "completed" and run.read_state()["step"] == 18
    code, _, err = run_cli(capsys, home, "generate", "--run", run.id, "--max-new-tokens", "3", "--seed", "1")
    assert code == 0, err


def test_a_resume_of_a_completed_run_with_emptied_weights_rebuilds_them(damaged_home, capsys):
    """Nothing left to train: the resume still leaves weights that load, rather than 'completed' over none."""
    home, run, _ = damaged_home
    run.file("model.safetensors").write_bytes(b"")
    code, out, err = run_cli(capsys, home, "train", "--resume", run.id)
    assert code == 0, err
    assert check_run(run) is None
    # the checkpoint was saved at the last evaluation, which was the best: the weights are the best ones
    assert "rebuilt from checkpoint.pt: step 12, the best weights" in run.read_log()


def test_a_metrics_line_with_a_word_for_a_step_is_skipped(damaged_home, capsys):
    home, run, _ = damaged_home
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('{"type": "train", "step": "x", "loss": 1.0}\n')
    assert check_run(run) is None
    code, out, err = run_cli(capsys, home, "train", "--resume", run.id, "--set", "max_iters=18")
    assert code == 0, err
    assert '"step": "x"' not in run.file("metrics.jsonl").read_text()
    assert [m["step"] for m in run.metrics() if m["type"] == "eval"] == [6, 12, 18]


def test_a_checkpoint_that_does_not_fit_the_settings_is_named_on_resume(damaged_home, capsys):
    home, run, other = damaged_home
    shutil.copy(other / "checkpoint.pt", run.file("checkpoint.pt"))
    code, _, err = run_cli(capsys, home, "train", "--resume", run.id, "--set", "max_iters=18")
    assert code == 1
    assert one_line(err).startswith(f"gptui: error: run {run.id} is damaged: checkpoint.pt does not match "
                                    "config.json (transformer.h.1.")
    assert run.read_state()["status"] == "completed"  # a refused resume leaves the run as it was
