"""Kills, ctrl-c, full disks, out-of-memory and two trainings at once: nothing saved is ever lost."""

from __future__ import annotations

import dataclasses
import errno
import json
import random
import signal
import time

import pytest
import torch
from support import gptui, gptui_background

from gptui.core import fsio, runs
from gptui.core.fsio import read_jsonl
from gptui.core.generate import load_model
from gptui.core.model import GPT
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainingFailed, TrainJob
from gptui.core.workspace import Workspace

SLOW_TINY = ["--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=32",
             "--set", "batch_size=4", "--set", "max_iters=400", "--set", "warmup_iters=1",
             "--set", "eval_interval=10", "--set", "eval_iters=1", "--set", "sample_interval=0",
             "--set", "tokenizer=char", "--set", "device=cpu", "--set", "dtype=float32"]


def start_training(home, *extra):
    return gptui_background(home, "train", "--input", "tiny", *SLOW_TINY, *extra)


def wait_for_run(home, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [p for p in (home / "models").iterdir() if (p / "checkpoint.pt").exists()]
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def assert_loadable(home, run_dir):
    """The run lists without damage, its checkpoint loads safely and its metrics read."""
    store = RunStore(Workspace(home))
    info = store.info(store.resolve(run_dir.name))
    assert info.damaged is None, info.damaged
    torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert read_jsonl(run_dir / "metrics.jsonl"), "metrics unreadable"
    return info


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_loadable_resumable_run(small_workspace):
    rng = random.Random(7)
    home = small_workspace.home
    proc = start_training(home)
    run_dir = wait_for_run(home)
    for _ in range(3):  # kill, check, resume, kill again at another moment
        time.sleep(rng.uniform(0.1, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write('{"type": "train", "step": 99')  # a torn last line, as a kill mid-write leaves
        info = assert_loadable(home, run_dir)
        assert info.status == "interrupted"
        listed = gptui(home, "runs", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["status"] == "interrupted"
        step_saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
        proc = gptui_background(home, "train", "--resume", run_dir.name)
        time.sleep(0.5)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 400
    assert step_saved <= 400
    steps = [m["step"] for m in (json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines())
             if m["type"] == "eval"]
    assert steps == sorted(set(steps)), "resume must not duplicate evaluations"


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run_stopped(small_workspace):
    home = small_workspace.home
    proc = start_training(home)
    run_dir = wait_for_run(home)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "stopped" and state["stop_reason"].startswith("interrupted")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == state["step"] > 0
    resumed = gptui(home, "train", "--resume", run_dir.name[:10], "--set", "max_iters=" + str(state["step"] + 5))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == state["step"] + 5


def test_disk_full_while_saving_keeps_the_previous_checkpoint(small_workspace, small_config, monkeypatch):
    config = dataclasses.replace(small_config, max_iters=30, eval_interval=10)
    real_atomic_write = fsio.atomic_write
    saves = []

    def full_disk_after_first_checkpoint(path, write):
        if path.name == "checkpoint.pt":
            saves.append(path)
            if len(saves) > 1:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_atomic_write(path, write)

    monkeypatch.setattr(runs, "atomic_write", full_disk_after_first_checkpoint)  # Run.write_file's writer
    job = TrainJob(small_workspace, "tiny", config)
    with pytest.raises(TrainingFailed, match="No space left on device"):
        job.run()
    run = RunStore(small_workspace).runs()[0]
    assert torch.load(run.file("checkpoint.pt"), weights_only=True)["step"] == 10  # the last good one
    assert run.read_state()["status"] == "failed"
    assert load_model(run, "cpu").model is not None


def test_out_of_memory_marks_the_run_failed_with_a_hint(small_workspace, small_config, monkeypatch):
    calls = {"n": 0}
    real_forward = GPT.forward

    def forward(self, *args, **kwargs):
        calls["n"] += self.training
        if calls["n"] == 9 and self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", forward)
    with pytest.raises(TrainingFailed, match="lower batch_size or block_size"):
        TrainJob(small_workspace, "tiny", small_config).run()
    run = RunStore(small_workspace).runs()[0]
    state = run.read_state()
    assert state["status"] == "failed" and "out of memory" in state["error"]
    assert "lower batch_size" in run.read_log()


def test_a_read_only_models_folder_is_a_clear_error(small_workspace, small_config, monkeypatch):
    from pathlib import Path

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.parent == small_workspace.models:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(TrainingFailed, match="Permission denied"):
        TrainJob(small_workspace, "tiny", small_config).run()


def test_two_trainings_at_once_make_two_runs(small_workspace):
    home = small_workspace.home
    args = ["train", "--input", "tiny", *SLOW_TINY, "--set", "max_iters=20", "--name", "same"]
    procs = [gptui_background(home, *args) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    ids = {json.loads(out.strip().splitlines()[-1])["run"] for out, _ in results}
    assert len(ids) == 2
    for run_id in ids:
        state = json.loads((home / "models" / run_id / "state.json").read_text())
        assert state["status"] == "completed" and state["step"] == 20


def test_a_run_stopped_before_its_first_evaluation_keeps_no_untrained_weights(small_workspace, small_config):
    from gptui.core import events as ev
    from gptui.core.errors import InputError

    job = None

    def stop_at_start(e):
        if isinstance(e, ev.Started):
            job.stop()

    job = TrainJob(small_workspace, "tiny", small_config, on_event=stop_at_start)
    result = job.run()
    store = RunStore(small_workspace)
    run = store.resolve(result.run_id)
    assert result.status == "stopped" and not run.file("model.safetensors").exists()
    info = store.info(run)
    assert info.damaged is None and info.status == "stopped"
    assert store.newest() is None  # nothing to generate from yet
    with pytest.raises(InputError, match="no saved weights yet"):
        load_model(run, "cpu")
