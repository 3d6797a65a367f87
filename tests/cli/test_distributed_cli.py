"""Training on several processes, as a user runs it: `gptui train --nproc-per-node 2` (torchrun, gloo, CPU),
`torchrun -m gptui train`, two "machines" on 127.0.0.1, ctrl-c then resume, a rank that dies, bad values.

Every run here is the conftest's tiny model on the tiny corpus; each subprocess imports torch, so a run costs a
few seconds of start-up. Ports are free ones found by binding port 0, on 127.0.0.1 only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch
from support import ENV, assert_one_line_error, gptui, interrupt_training, took_a_step

pytestmark = pytest.mark.slow

BASE = {"max_iters": 30, "eval_interval": 10, "eval_iters": 4, "sample_interval": 0, "dropout": 0.0}


def sets(overrides: dict) -> list[str]:
    out: list[str] = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={value}"]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path, make_corpus_text) -> Path:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    return tmp_path


def summary_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def evals(home: Path, run_id: str) -> list[dict]:
    lines = (home / "models" / run_id / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [m for m in map(json.loads, lines) if m["type"] == "eval"]


def weights(home: Path, run_id: str) -> dict:
    return torch.load(home / "models" / run_id / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tol, rtol=0), key


def test_two_ranks_equal_one_rank_with_grad_accum_two(home, tiny_overrides):
    """Rank r takes the r-th half of the global batch that one process with grad_accum 2 draws: same losses."""
    two = summary_of(gptui(home, "train", "--input", "tiny", "--name", "two", *sets(tiny_overrides | BASE),
                           "--nproc-per-node", "2"))
    one = summary_of(gptui(home, "train", "--input", "tiny", "--name", "one",
                           *sets(tiny_overrides | BASE | {"grad_accum": 2})))
    assert two["status"] == one["status"] == "completed" and two["steps"] == one["steps"] == 30
    a, b = evals(home, two["run"]), evals(home, one["run"])
    assert [e["step"] for e in a] == [e["step"] for e in b] == [10, 20, 30]
    for x, y in zip(a, b, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-5)
        assert x["val_bpb"] == pytest.approx(y["val_bpb"], abs=1e-5)
    assert_same_weights(weights(home, two["run"]), weights(home, one["run"]), 1e-5)

    config = json.loads((home / "models" / two["run"] / "config.json").read_text(encoding="utf-8"))
    assert config["world_size"] == 2
    assert json.loads((home / "models" / one["run"] / "config.json").read_text(encoding="utf-8"))["world_size"] == 1
    log = (home / "models" / two["run"] / "train.log").read_text(encoding="utf-8")
    assert "distributed: 2 processes (gloo), global batch 256 tokens per step (4 x 32 x 1 x 2)" in log
    listing = json.loads(gptui(home, "runs", "--json").stdout)
    assert {r["id"]: r["world_size"] for r in listing} == {two["run"]: 2, one["run"]: 1}


def test_ctrl_c_stops_every_rank_at_one_step_and_resume_continues_exactly(home, tiny_overrides):
    """SIGINT to the launcher: the ranks agree on a step, rank 0 saves once, status stopped; a resume with the
    same world size ends where an uninterrupted 2-rank run ends (dropout on: every rank's RNG is restored)."""
    overrides = tiny_overrides | BASE | {"max_iters": 500, "eval_interval": 5, "dropout": 0.1}
    whole = summary_of(gptui(home, "train", "--input", "tiny", "--name", "whole", *sets(overrides),
                             "--nproc-per-node", "2"))
    code, out, err = interrupt_training(home, ["--input", "tiny", "--name", "parted", *sets(overrides),
                                              "--nproc-per-node", "2"],
                                        lambda line: line.startswith("step 5: train"), "its first evaluation",
                                        timeout=120)
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err, err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["status"] == "stopped" and "interrupted" in stopped["reason"]
    assert 5 <= stopped["steps"] < 500
    run = home / "models" / stopped["run"]
    state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    assert state["status"] == "stopped" and state["step"] == stopped["steps"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == stopped["steps"]
    assert not list(run.glob(".*.tmp"))
    assert err.count("stopping: evaluating and saving") == 1, "only rank 0 speaks"

    resumed = summary_of(gptui(home, "train", "--resume", stopped["run"], "--nproc-per-node", "2"))
    assert resumed["run"] == stopped["run"] and resumed["status"] == "completed" and resumed["steps"] == 500
    assert resumed["best_val_loss"] == pytest.approx(whole["best_val_loss"], abs=1e-5)
    assert_same_weights(weights(home, resumed["run"]), weights(home, whole["run"]), 1e-5)
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "data order changed" not in log


def test_ctrl_c_before_the_first_evaluation_evaluates_on_every_rank_and_keeps_the_weights(home, tiny_overrides):
    overrides = tiny_overrides | BASE | {"max_iters": 1_000_000, "eval_interval": 100_000}
    code, out, err = interrupt_training(home, ["--input", "tiny", *sets(overrides), "--nproc-per-node", "2"],
                                        took_a_step, "taking a step", timeout=120)
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert err.count("stopping: evaluating and saving") == 1
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["status"] == "stopped" and 0 < stopped["steps"] < 100_000
    assert [e["step"] for e in evals(home, stopped["run"])] == [stopped["steps"]]
    assert (home / "models" / stopped["run"] / "model.safetensors").is_file()
    talk = gptui(home, "generate", "--run", stopped["run"], "--prompt", "First", "--max-new-tokens", "5")
    assert talk.returncode == 0 and talk.stdout.startswith("First"), talk.stderr


def test_a_fine_tune_on_two_ranks_equals_one_rank_with_grad_accum_two(home, tiny_overrides):
    """Rank 0 prepares the new corpus with the source's tokenizer and loads its weights; rank 1 gets both."""
    source = summary_of(gptui(home, "train", "--input", "tiny", "--name", "source",
                              *sets(tiny_overrides | BASE | {"max_iters": 10})))
    text = (home / "inputs" / "tiny.txt").read_text(encoding="utf-8")
    (home / "inputs" / "other.txt").write_text("\n".join(reversed(text.splitlines())) + "\n", encoding="utf-8")
    tune = {"max_iters": 10, "eval_interval": 5, "warmup_iters": 1}
    two = summary_of(gptui(home, "train", "--init-from", source["run"], "--input", "other", "--name", "two",
                           *sets(tune), "--nproc-per-node", "2"))
    one = summary_of(gptui(home, "train", "--init-from", source["run"], "--input", "other", "--name", "one",
                           *sets(tune | {"grad_accum": 2})))
    a, b = evals(home, two["run"]), evals(home, one["run"])
    assert [e["step"] for e in a] == [e["step"] for e in b] == [5, 10]
    for x, y in zip(a, b, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-5)
    assert_same_weights(weights(home, two["run"]), weights(home, one["run"]), 1e-5)
    config = json.loads((home / "models" / two["run"] / "config.json").read_text(encoding="utf-8"))
    assert config["init_from"] == source["run"] and config["world_size"] == 2

    # a text the source's char tokenizer cannot encode: rank 0 refuses it, one line for the whole job
    (home / "inputs" / "accents.txt").write_text(text + "café\n", encoding="utf-8")
    refused = gptui(home, "train", "--init-from", source["run"], "--input", "accents", "--nproc-per-node", "2")
    assert_one_line_error(refused, 2, "char tokenizer cannot encode accents.txt", "'é'")
    assert len(list((home / "models").iterdir())) == 3


def test_resume_with_another_world_size_continues_and_says_the_order_changed(home, tiny_overrides):
    first = summary_of(gptui(home, "train", "--input", "tiny", *sets(tiny_overrides | BASE | {"max_iters": 10}),
                             "--nproc-per-node", "2"))
    more = summary_of(gptui(home, "train", "--resume", first["run"], "--set", "max_iters=20"))
    assert more["status"] == "completed" and more["steps"] == 20
    run = home / "models" / first["run"]
    assert "data order changed: the checkpoint was trained by 2 processes, this run has 1" in \
        (run / "train.log").read_text(encoding="utf-8")
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["world_size"] == 1


def test_torchrun_runs_the_train_command_itself(home, tiny_overrides):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "gptui",
         "--home", str(home), "train", "--input", "tiny", *sets(tiny_overrides | BASE)],
        capture_output=True, text=True, timeout=180, env=ENV, cwd=home,
    )
    summary = summary_of(result)
    assert summary["status"] == "completed" and summary["steps"] == 30
    assert result.stdout.strip().count("\n") == 0, "one summary: only rank 0 prints"
    assert result.stderr.count("x 2 processes, steps 0->30, global batch 256 tokens") == 1
    config = json.loads((home / "models" / summary["run"] / "config.json").read_text(encoding="utf-8"))
    assert config["world_size"] == 2
    assert len(list((home / "models").iterdir())) == 1, "rank 1 made no run folder"


def test_two_machines_on_localhost_train_one_run(home, tiny_overrides):
    port = free_port()
    common = ["train", "--input", "tiny", *sets(tiny_overrides | BASE), "--nproc-per-node", "1", "--nnodes", "2",
              "--master-addr", "127.0.0.1", "--master-port", str(port), "--rdzv-timeout", "60"]
    node0 = subprocess.Popen([sys.executable, "-m", "gptui", "--home", str(home), *common, "--node-rank", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=home)
    node1 = subprocess.Popen([sys.executable, "-m", "gptui", "--home", str(home), *common, "--node-rank", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=home)
    try:
        out0, err0 = node0.communicate(timeout=180)
        out1, err1 = node1.communicate(timeout=60)
    finally:
        for p in (node0, node1):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert node0.returncode == 0, err0
    assert node1.returncode == 0, err1
    assert out1 == "" and err1 == "", "the second machine's rank stays silent"
    summary = json.loads(out0.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 30
    assert json.loads((home / "models" / summary["run"] / "config.json").read_text())["world_size"] == 2


def test_a_rank_that_dies_fails_the_run_which_still_resumes(home, tiny_overrides):
    overrides = tiny_overrides | BASE | {"max_iters": 1_000_000, "eval_interval": 5}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptui", "--home", str(home), "train", "--input", "tiny", *sets(overrides),
         "--nproc-per-node", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=home,
    )
    try:
        for line in proc.stderr:
            if line.startswith("step 10: train"):  # the checkpoint of step 5 is on disk by now
                break
        run = next((home / "models").iterdir())
        assert (run / "checkpoint.pt").is_file()
        rank0 = json.loads((run / "state.json").read_text(encoding="utf-8"))["pid"]
        workers = [c for c in psutil.Process(proc.pid).children() if c.pid != rank0]
        assert len(workers) == 1, workers
        workers[0].kill()  # rank 1 dies without a word
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("gptui: error: rank 1 was killed (SIGKILL)"), err
    assert f"--resume {run.name}" in line
    assert "Traceback" not in err
    state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    assert state["status"] == "failed" and state["error"] == "rank 1 was killed (SIGKILL)"
    listing = json.loads(gptui(home, "runs", "--json").stdout)
    assert listing[0]["status"] == "failed"

    resumed = summary_of(gptui(home, "train", "--resume", run.name, "--set", f"max_iters={state['step'] + 10}",
                               "--nproc-per-node", "2"))
    assert resumed["status"] == "completed"


# --- bad input: one line, exit 2 (or 1 for a failure), nothing written ------------------------------------------


def _holding_a_port():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    return s


BAD = {
    "no processes": (["--nproc-per-node", "0"], 2, "--nproc-per-node must be at least 1"),
    "negative processes": (["--nproc-per-node", "-1"], 2, "at least 1"),
    "not a number": (["--nproc-per-node", "two"], 2, "invalid int value"),
    "machines without processes": (["--nnodes", "2"], 2, "--nnodes needs --nproc-per-node"),
    "machines without a master": (["--nproc-per-node", "1", "--nnodes", "2"], 2, "--master-addr and --master-port"),
    "node rank out of range": (["--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "2", "--master-addr",
                                "127.0.0.1", "--master-port", "29999"], 2, "--node-rank must be between 0 and 1"),
    "both rendezvous kinds": (["--nproc-per-node", "1", "--master-port", "29999", "--rdzv-endpoint", "h:1"], 2,
                              "not both"),
    "bad endpoint": (["--nproc-per-node", "1", "--rdzv-endpoint", "nowhere"], 2, "HOST:PORT"),
    "cuda ranks without a GPU": (["--nproc-per-node", "2", "--set", "device=cuda"], 2, "no CUDA GPU"),
    "unknown corpus": (["--nproc-per-node", "2", "--input", "nosuch"], 2, "nosuch"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_exit_with_one_line(home, case):
    args, code, fragment = BAD[case]
    if "--input" not in args:
        args = ["--input", "tiny", *args]
    if case == "cuda ranks without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(gptui(home, "train", *args, timeout=60), code, fragment)
    assert not (home / "models").exists() or not any((home / "models").iterdir()), "nothing half-written"


def test_a_port_in_use_is_refused(home):
    with _holding_a_port() as held:
        port = held.getsockname()[1]
        result = gptui(home, "train", "--input", "tiny", "--nproc-per-node", "1", "--nnodes", "2", "--node-rank",
                       "0", "--master-addr", "127.0.0.1", "--master-port", str(port), timeout=60)
    assert_one_line_error(result, 2, f"port {port} is in use")
    assert not (home / "models").exists() or not any((home / "models").iterdir())


def test_an_unreachable_rendezvous_gives_up_in_time(home):
    result = gptui(home, "train", "--input", "tiny", "--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "1",
                   "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--rdzv-timeout", "2",
                   timeout=90)  # no other machine ever comes: it must give up, well before this limit
    assert_one_line_error(result, 1, "could not form the job at 127.0.0.1:", "within 2s")
    assert not (home / "models").exists() or not any((home / "models").iterdir())
