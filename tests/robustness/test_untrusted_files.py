"""Damaged run folders are listed as damaged with the reason; crafted files never run code."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from support import gptui

from gptui.core.errors import DamagedRun
from gptui.core.generate import load_model
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob


@pytest.fixture
def trained(small_workspace, small_config):
    """Two trained runs; tests damage the first and check the second still works."""
    first = TrainJob(small_workspace, "tiny", small_config, name="first").run()
    second = TrainJob(small_workspace, "tiny", small_config, name="second").run()
    store = RunStore(small_workspace)
    return store, store.resolve(first.run_id), store.resolve(second.run_id)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "missing config": (lambda run: run.file("config.json").unlink(), "config.json is missing"),
    "invalid config": (lambda run: run.file("config.json").write_text("{not json"), "not valid JSON"),
    "missing weights": (lambda run: run.file("model.safetensors").unlink(), "model.safetensors is missing"),
    "truncated weights": (lambda run: _truncate(run.file("model.safetensors")), "truncated"),
    "garbage weights": (lambda run: run.file("model.safetensors").write_bytes(b"\xff" * 64), "unreadable"),
    "missing tokenizer": (lambda run: run.file("tokenizer.json").unlink(), "tokenizer.json is missing"),
    "tokenizer mismatch": (
        lambda run: run.file("tokenizer.json").write_text(json.dumps({"type": "gptui-char", "chars": ["a", "b"]})),
        "tokenizer has 2 tokens but the model expects",
    ),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_is_listed_with_its_reason_and_the_rest_works(trained, case):
    store, broken, healthy = trained
    damage, reason = DAMAGE[case]
    damage(broken)
    infos = {i.id: i for i in store.list()}
    assert infos[broken.id].status == "damaged"
    assert reason in infos[broken.id].damaged
    assert infos[healthy.id].damaged is None and infos[healthy.id].status == "completed"
    with pytest.raises(DamagedRun, match=re.escape(broken.id)):
        load_model(broken, "cpu")
    assert load_model(healthy, "cpu").model is not None
    home = store.workspace.home
    listed = gptui(home, "runs", "--json")
    assert listed.returncode == 0
    assert {r["id"]: r["status"] for r in json.loads(listed.stdout)}[broken.id] == "damaged"
    result = gptui(home, "generate", "--run", broken.id, "--max-new-tokens", "5")
    assert result.returncode == 1 and "damaged" in result.stderr and "Traceback" not in result.stderr


class RunsCode:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_crafted_to_run_code_is_refused(trained, tmp_path):
    store, run, _ = trained
    marker = tmp_path / "pwned"
    with open(run.file("checkpoint.pt"), "wb") as f:
        pickle.dump({"model": RunsCode(str(marker))}, f)
    run.write_state(status="stopped")
    with pytest.raises(DamagedRun, match="is damaged: checkpoint.pt is unreadable"):
        TrainJob(store.workspace, None, None, resume=run.id).run()
    assert not marker.exists()
    result = gptui(store.workspace.home, "train", "--resume", run.id)
    # a damaged run is a failure, not bad usage (issue 21): exit 1, as generate and export say of it
    assert result.returncode == 1 and "checkpoint.pt is unreadable" in result.stderr
    assert not marker.exists()
    assert run.read_state()["status"] == "stopped"  # a refused resume leaves the run as it was


def test_a_crafted_torch_zip_checkpoint_is_refused(trained, tmp_path):
    store, run, _ = trained
    marker = tmp_path / "pwned"
    torch.save({"model": RunsCode(str(marker))}, run.file("checkpoint.pt"))
    with pytest.raises(DamagedRun, match="cannot be loaded safely"):
        TrainJob(store.workspace, None, None, resume=run.id).run()
    assert not marker.exists()


def test_no_pickle_eval_or_exec_of_data_anywhere():
    source = Path(__file__).resolve().parents[2] / "gptui"
    for path in source.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bimport pickle\b|\bpickle\.load|(?<![.\w])eval\(|(?<![.\w])exec\(", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
