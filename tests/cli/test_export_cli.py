"""`gptui export RUN --format hf --out DIR` as a user runs it: the folder on success, and one line with exit 2 for
an unknown run, a folder that is not empty (left as it was), an unknown format, a run without weights yet and
a recipe no transformers class computes. (What transformers loads from the folder is checked in tests/unit/test_export.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ENV, assert_one_line_error, gptui

FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def home(tmp_path_factory, make_corpus_text, tiny_overrides) -> Path:
    """A workspace with one tiny trained run (trained in this process: cheaper than a subprocess)."""
    import torch

    from gptui.core.config import apply_overrides, check, preset_config
    from gptui.core.trainer import TrainJob
    from gptui.core.workspace import Workspace

    torch.set_num_threads(1)
    ws = Workspace(tmp_path_factory.mktemp("export-cli")).ensure()
    (ws.inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    config = check(apply_overrides(preset_config("tiny-classic"), {**tiny_overrides, "max_iters": 12, "eval_interval": 6,
                                                           "sample_interval": 0}))
    assert TrainJob(ws, "tiny", config, name="exportme").run().status == "completed"
    return ws.home


@pytest.fixture(scope="module")
def run_id(home) -> str:
    (run,) = (p.name for p in (home / "models").iterdir() if p.name.endswith("exportme"))
    return run


def test_export_writes_a_transformers_folder(home, run_id, tmp_path):
    out = tmp_path / "hf"
    result = gptui(home, "export", run_id[:10], "--format", "hf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exported run {run_id} to {out}: Hugging Face transformers folder (GPT2LMHeadModel)"
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_export_takes_home_after_the_subcommand_and_hf_by_default(home, run_id, tmp_path):
    out = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "gptui", "export", run_id, "--home", str(home), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert not (tmp_path / "inputs").exists() and not (tmp_path / "models").exists()


def test_an_unknown_run_is_one_line_and_exit_2(home, tmp_path):
    result = gptui(home, "export", "nosuchrun", "--out", str(tmp_path / "hf"))
    assert_one_line_error(result, 2, "no run 'nosuchrun'")
    assert not (tmp_path / "hf").exists()


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(home, run_id, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "config.json").write_text("precious")
    result = gptui(home, "export", run_id, "--out", str(out))
    assert_one_line_error(result, 2, str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["config.json"]
    assert (out / "config.json").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary folder left either


def test_an_unknown_format_is_one_line_and_exit_2(home, run_id, tmp_path):
    result = gptui(home, "export", run_id, "--format", "onnx", "--out", str(tmp_path / "x"))
    assert_one_line_error(result, 2, "unknown export format 'onnx'", "hf")
    assert not (tmp_path / "x").exists()


def test_out_is_required(home, run_id):
    assert_one_line_error(gptui(home, "export", run_id), 2, "--out")


def test_a_run_without_weights_is_one_line_and_exit_2(home, run_id, tmp_path):
    fresh = home / "models" / "nothing-yet"
    shutil.copytree(home / "models" / run_id, fresh)
    try:
        (fresh / "model.safetensors").unlink()
        state = json.loads((fresh / "state.json").read_text())
        (fresh / "state.json").write_text(json.dumps({**state, "status": "stopped", "best_val_loss": None}))
        result = gptui(home, "export", "nothing-yet", "--out", str(tmp_path / "hf"))
        assert_one_line_error(result, 2, "nothing-yet has no saved weights")
        assert not (tmp_path / "hf").exists()
    finally:
        shutil.rmtree(fresh)


def test_a_recipe_no_class_computes_is_named_in_one_line_with_the_nearest_that_exports(home, run_id, tmp_path):
    modern = home / "models" / "modern"
    shutil.copytree(home / "models" / run_id, modern)
    try:
        config = json.loads((modern / "config.json").read_text())
        # settings that keep the weights' shapes (one that changes them, rope, would make the run damaged)
        config["settings"].update(norm="rmsnorm", mlp="relu2")
        (modern / "config.json").write_text(json.dumps(config))
        result = gptui(home, "export", "modern", "--out", str(tmp_path / "hf"))
        assert_one_line_error(result, 2, "modern cannot be exported", "is in the way", "the nearest that exports")
        assert not (tmp_path / "hf").exists()
    finally:
        shutil.rmtree(modern)
