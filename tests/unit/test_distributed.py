"""Training on several processes, the parts that run in one: the shared-draw batch sampler, the single-process
`Dist` (every collective a no-op), evaluation shared out over ranks, the launcher's checks and root-cause
choice, the run a non-main rank holds, and the follower that turns a run folder back into trainer events.

The real multi-process runs (torchrun, gloo, 2 ranks) are in tests/cli/test_distributed_cli.py; one test here
starts two ranks with torch.multiprocessing to check the collectives themselves."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket

import numpy as np
import pytest
import torch

from gptui.core import events as ev
from gptui.core.data import BatchSampler, TokenizerSpec, prepare
from gptui.core.distributed import Dist, PeerFailed, PeerLost
from gptui.core.errors import InputError
from gptui.core.follow import RunFollower
from gptui.core.launch import (
    Death,
    LaunchDir,
    LaunchOptions,
    check_machine,
    port_in_use,
    read_outcome,
    root_cause,
)
from gptui.core.runs import NullRun, Run, RunStore
from gptui.core.trainer import TrainJob, estimate_loss


@pytest.fixture
def tokens():
    return (np.arange(5000, dtype=np.uint16) * 7) % 251


# --- the batch sampler: one global draw, each rank its slice ------------------------------------------------


def test_rank_r_of_w_takes_the_r_th_micro_batch_of_one_process_with_grad_accum_w(tokens):
    world, steps = 3, 4
    single = BatchSampler(tokens, 16, 5, seed=11)
    ranks = [BatchSampler(tokens, 16, 5, seed=11, rank=r, world_size=world) for r in range(world)]
    for _ in range(steps):
        micro = [single.next() for _ in range(world)]  # one optimizer step of a process with grad_accum W
        for r, sampler in enumerate(ranks):
            x, y = sampler.next()
            assert torch.equal(x, micro[r][0]) and torch.equal(y, micro[r][1])
    assert len({s.state() for s in ranks}) == 1, "every rank's generator is in the same state"
    assert ranks[0].state() == single.state(), "one checkpointed state resumes every rank"


def test_one_rank_of_one_draws_exactly_as_before(tokens):
    a, b = BatchSampler(tokens, 16, 3, seed=5), BatchSampler(tokens, 16, 3, seed=5, rank=0, world_size=1)
    for _ in range(5):
        assert torch.equal(a.next()[0], b.next()[0])


def test_skip_draws_without_gathering(tokens):
    a, b = BatchSampler(tokens, 16, 3, seed=9), BatchSampler(tokens, 16, 3, seed=9)
    a.next()
    b.skip()
    assert a.state() == b.state()


def test_a_rank_outside_the_world_is_refused(tokens):
    with pytest.raises(ValueError, match="rank 2"):
        BatchSampler(tokens, 16, 3, seed=0, rank=2, world_size=2)


# --- one process: the no-op Dist --------------------------------------------------------------------------------


def test_single_process_dist_changes_nothing():
    d = Dist()
    assert (d.rank, d.world_size, d.is_main, d.distributed) == (0, 1, True, False)
    assert d.mean(2.5) == 2.5 and d.sum(3.0) == 3.0
    assert d.any_true(False, True) == (False, True)
    assert d.from_main(lambda: {"a": 1}) == {"a": 1}
    assert d.gather(7) == [7]
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model) is model
    with d.no_sync(model):
        pass
    assert d.explain(RuntimeError("Connection closed by peer")) is None


class _Rank(Dist):
    """Rank r of w without a process group: collectives return this rank's own share (sum) unchanged."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world_size = rank, world


def test_evaluation_shared_out_over_ranks_adds_up_to_the_single_process_one(workspace, corpus, tiny_config):
    from gptui.core.model import GPT, ModelConfig

    config = dataclasses.replace(tiny_config, eval_iters=5)
    data = prepare(corpus, TokenizerSpec.from_config(config), workspace.cache)
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_config(config, data.tokenizer.vocab_size))
    ctx = contextlib.nullcontext()
    whole = estimate_loss(model, data, config, ctx, "cpu", 3)
    for world in (2, 3):
        parts = [estimate_loss(model, data, config, ctx, "cpu", 3, _Rank(r, world)) for r in range(world)]
        for split in ("train", "val"):
            assert sum(p[split] for p in parts) == pytest.approx(whole[split], abs=1e-5), (world, split)


# --- a rank other than the main one writes nothing ------------------------------------------------------------


def test_null_run_writes_nothing(tmp_path):
    run = NullRun(tmp_path / "models" / "r")
    run.write_config({"a": 1})
    run.update_config(world_size=2)
    run.write_state(status="running")
    run.append_metric({"type": "train"})
    run.truncate_metrics(3)
    run.log("hello")
    run.write_file("checkpoint.pt", lambda p: p.write_text("x"))
    assert not (tmp_path / "models").exists()
    with pytest.raises(InputError):
        run.save_generation({}, "text")


def test_a_non_main_rank_trains_without_touching_the_run_folder(workspace, corpus, small_config):
    """Rank 1 of 2, simulated: it reads the data rank 0 prepared and the run id it created, trains, and leaves
    no file behind (every collective answers with this rank's own value)."""

    class SecondRank(_Rank):
        def __init__(self):
            super().__init__(1, 2)

        def from_main(self, work):
            return {"run_id": "20240101-000000-tiny", "settings": dataclasses.asdict(small_config),
                    "corpus": "tiny.txt", "corpus_sha256": data.corpus_sha256, "tokens": len(data.tokens),
                    "resume": False}

        def gather(self, value):
            return [value, value]

    data = prepare(corpus, TokenizerSpec.from_config(small_config), workspace.cache)
    before = sorted(p.relative_to(workspace.home) for p in workspace.home.rglob("*"))
    finished = TrainJob(workspace, None, None, dist=SecondRank()).run()
    assert finished.status == "completed" and finished.step == small_config.max_iters
    assert finished.run_id == "20240101-000000-tiny"
    assert sorted(p.relative_to(workspace.home) for p in workspace.home.rglob("*")) == before


def test_new_runs_record_their_world_size(workspace, corpus, small_config):
    finished = TrainJob(workspace, "tiny", small_config).run()
    run = RunStore(workspace).resolve(finished.run_id)
    assert run.read_config()["world_size"] == 1
    assert RunStore(workspace).info(run).world_size == 1
    assert torch.load(run.file("checkpoint.pt"), weights_only=True)["world_size"] == 1


def test_run_info_world_size_defaults_to_one_for_older_runs(workspace, corpus, small_config):
    finished = TrainJob(workspace, "tiny", small_config).run()
    run = RunStore(workspace).resolve(finished.run_id)
    config = run.read_config()
    del config["world_size"]
    run.write_config(config)
    assert RunStore(workspace).info(run).world_size == 1
    run.update_config(world_size=4)
    assert RunStore(workspace).info(run).world_size == 4


# --- two real ranks in this test: the collectives ----------------------------------------------------------------


def _two_ranks(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    from gptui.core.distributed import from_env

    d = from_env("cpu")
    out: dict = {"rank": d.rank, "world": d.world_size, "main": d.is_main}
    out["mean"] = d.mean(float(rank + 1))  # 1 and 2
    out["sum"] = d.sum(float(rank + 1))
    out["any"] = list(d.any_true(rank == 1, False))
    out["shared"] = d.from_main(lambda: {"from": "main", "rank": d.rank})
    out["gather"] = d.gather(rank * 10)

    # gradient accumulation: no_sync micro-steps average nothing; the last micro-step averages everything once
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    torch.manual_seed(0)
    model = d.wrap(torch.nn.Linear(4, 1))
    syncs: list[int] = []

    def counting(state, bucket):
        syncs.append(1)
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting)
    x = torch.full((2, 4), float(rank + 1))
    with d.no_sync(model):
        model(x).sum().backward()
    out["syncs_after_no_sync"] = len(syncs)
    model(x).sum().backward()
    out["syncs_after_last"] = len(syncs)
    out["grad"] = model.module.weight.grad.flatten().tolist()

    def fails():
        raise InputError("no such corpus")

    try:
        d.from_main(fails)
    except PeerFailed as exc:
        out["failure"] = ["PeerFailed", str(exc), exc.exit_code]
    except InputError as exc:
        out["failure"] = ["InputError", str(exc), exc.exit_code]
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    if rank == 1:
        os._exit(0)  # leave without a word: rank 0's next collective must say it lost contact
    try:
        for _ in range(50):
            d.barrier()
        out["lost"] = "no error"
    except PeerLost as exc:
        out["lost"] = str(exc)
    with open(os.path.join(folder, "rank0.json"), "w") as f:
        json.dump(out, f)
    os._exit(0)


@pytest.mark.slow
def test_two_ranks_average_agree_share_and_report_a_lost_peer(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_two_ranks, args=(port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["rank"], r0["world"], r0["main"]) == (0, 2, True) and (r1["rank"], r1["main"]) == (1, False)
    assert r0["mean"] == r1["mean"] == 1.5 and r0["sum"] == r1["sum"] == 3.0
    assert r0["any"] == r1["any"] == [True, False]
    assert r0["shared"] == r1["shared"] == {"from": "main", "rank": 0}
    assert r0["gather"] == r1["gather"] == [0, 10]
    assert r0["syncs_after_no_sync"] == 0 and r0["syncs_after_last"] == 1
    # rank r's inputs are r+1 (2 rows): summed over two micro-steps, averaged over ranks: (2*2*1 + 2*2*2) / 2
    assert r0["grad"] == r1["grad"] == [6.0] * 4
    assert r0["failure"] == ["InputError", "no such corpus", 2]
    assert r1["failure"] == ["PeerFailed", "rank 0 failed: no such corpus", 2]
    assert r0["lost"].startswith("lost contact with another rank"), r0["lost"]


# --- the launcher's checks and its reading of an outcome ---------------------------------------------------------


@pytest.mark.parametrize("options,fragment", [
    (LaunchOptions(0), "--nproc-per-node must be at least 1"),
    (LaunchOptions(-2), "--nproc-per-node must be at least 1"),
    (LaunchOptions(1, nnodes=0), "--nnodes must be at least 1"),
    (LaunchOptions(1, nnodes=2), "needs --master-addr and --master-port"),
    (LaunchOptions(1, nnodes=2, node_rank=2, master_addr="a", master_port=1234), "--node-rank must be between 0 and 1"),
    (LaunchOptions(1, master_port=70000), "between 1 and 65535"),
    (LaunchOptions(1, master_port=1234, rdzv_endpoint="h:1"), "not both"),
    (LaunchOptions(1, rdzv_endpoint="nohost"), "HOST:PORT"),
    (LaunchOptions(1, rdzv_endpoint="h:0"), "HOST:PORT"),
    (LaunchOptions(1, rdzv_timeout=0), "--rdzv-timeout"),
    (LaunchOptions(1, rdzv_timeout=float("inf")), "--rdzv-timeout"),
])
def test_impossible_launch_options_are_refused(options, fragment):
    with pytest.raises(InputError, match=fragment.replace("-", r"\-")):
        options.check()


def test_torchrun_options():
    one = LaunchOptions(2).check().torchrun_args()
    assert one[:4] == ["--nproc-per-node", "2", "--nnodes", "1"] and "--master-port" not in one
    two = LaunchOptions(1, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501).check().torchrun_args()
    assert two[two.index("--node-rank") + 1] == "1" and two[two.index("--master-addr") + 1] == "10.0.0.1"
    assert two[two.index("--master-port") + 1] == "29501"
    c10d = LaunchOptions(4, nnodes=2, rdzv_endpoint="host:29400", rdzv_timeout=12).check().torchrun_args()
    assert c10d[c10d.index("--rdzv-backend") + 1] == "c10d"
    assert "timeout=12" in c10d[c10d.index("--rdzv-conf") + 1]


def test_a_port_in_use_is_seen():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert port_in_use(s.getsockname()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not port_in_use(port)


def test_more_cuda_ranks_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="asks for one GPU per process but this machine has 1"):
        check_machine(LaunchOptions(2), "auto")
    check_machine(LaunchOptions(2), "cpu")  # CPU ranks need no GPU
    check_machine(LaunchOptions(1), "cuda")


def test_cuda_ranks_without_cuda_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        check_machine(LaunchOptions(2), "cuda")


def test_root_cause_prefers_a_rank_s_own_reason_then_a_killed_rank():
    killed = Death(1, -signal.SIGKILL, "SIGKILL", 100.0)
    terminated = Death(0, -signal.SIGTERM, "SIGTERM", 99.0)
    lost = {"rank": 0, "message": "lost contact with another rank (reset)", "exit_code": 1, "peer": True,
            "time": 98.0}
    assert root_cause({0: terminated, 1: killed}, {}) == ("rank 1 was killed (SIGKILL)", 1)
    assert root_cause({0: terminated, 1: killed}, {0: lost}) == ("rank 1 was killed (SIGKILL)", 1)
    own = {"rank": 1, "message": "out of memory", "exit_code": 1, "peer": False, "time": 101.0}
    assert root_cause({0: terminated, 1: Death(1, 1, None, 101.0)}, {0: lost, 1: own}) == \
        ("rank 1: out of memory", 1)
    bad = {"rank": 0, "message": "corpus changed", "exit_code": 2, "peer": False, "time": 1.0}
    assert root_cause({0: Death(0, 2, None, 1.0)}, {0: bad}) == ("corpus changed", 2)
    assert root_cause({}, {0: lost}) == (lost["message"], 1)
    named = {"rank": 1, "message": "rank 1 sees a different corpus", "exit_code": 2, "peer": False, "time": 1.0}
    assert root_cause({}, {1: named}) == ("rank 1 sees a different corpus", 2)
    assert root_cause({1: Death(1, 3, None, 5.0)}, {}) == ("rank 1 exited with status 3", 1)


def test_the_launcher_marks_the_run_failed_with_the_root_cause(tmp_path, capsys):
    run = Run(tmp_path / "models" / "r1")
    run.path.mkdir(parents=True)
    run.write_state(status="failed", step=40, error="lost contact with another rank (reset)")
    (run.path / "checkpoint.pt").write_bytes(b"x")
    folder = LaunchDir(tmp_path / "launch")
    folder.path.mkdir()
    folder.write_error(0, "lost contact with another rank (reset)", 1, True, str(run.path))
    code = read_outcome(folder, {1: Death(1, -9, "SIGKILL", 1.0), 0: Death(0, 1, None, 2.0)}, False)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gptui: error: rank 1 was killed (SIGKILL)")
    assert "--resume r1" in err[0]
    state = run.read_state()
    assert state["status"] == "failed" and state["error"] == "rank 1 was killed (SIGKILL)"
    assert "failed: rank 1 was killed (SIGKILL)" in run.read_log()


def test_a_clean_stop_after_an_interrupt_is_success(tmp_path, capsys):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    run.write_state(status="stopped", step=12)
    folder = LaunchDir(tmp_path / "launch")
    folder.path.mkdir()
    folder.write_started({"run_path": str(run.path)})
    assert read_outcome(folder, {}, interrupted=True) == 0
    assert capsys.readouterr().err == ""
    assert run.read_state()["status"] == "stopped"


# --- following a run through its folder --------------------------------------------------------------------------


def test_follower_reads_a_folder_written_before_log_lines_were_records(tmp_path):
    """metrics.jsonl with steps and evaluations only, samples only in train.log: the legacy reader shows them."""
    run = Run(tmp_path / "r")
    run.path.mkdir()
    follower = RunFollower(run, max_iters=100)
    assert follower.poll() == []
    run.log("gptui 0.1.0; run r")
    run.append_metric({"type": "train", "step": 10, "elapsed": 1.0, "loss": 3.5, "lr": 0.001,
                       "tokens_per_sec": 2000.0, "eta_seconds": 9.0, "memory": {"kind": "process"}})
    events = follower.poll()
    assert events == [ev.Step(10, 100, 1.0, 3.5, 0.001, 2000.0, 9.0, {"kind": "process"}),
                      ev.Log("gptui 0.1.0; run r")]
    with open(run.file("metrics.jsonl"), "a") as f:  # half a line: waits for the rest
        f.write('{"type": "eval", "step": 20, "elapsed": 2.0, ')
    assert follower.poll() == []
    with open(run.file("metrics.jsonl"), "a") as f:
        f.write('"train_loss": 3.1, "val_loss": 3.2, "val_bpb": 4.6, "best": true}\n')
    run.log("step     20  train 3.1000  val 3.2000")
    run.log("sample at step 20:\nROMEO:\n\nWhat light\n")
    events = follower.poll()
    assert ev.Eval(20, 2.0, 3.1, 3.2, 4.6, True) in events
    assert ev.Sample(20, "ROMEO:\n\nWhat light") in events
    assert ev.Log("sample at step 20:") in events and ev.Log("") in events
    run.log("finished: completed (reached max_iters) after 20 steps")
    events = follower.flush()
    assert events == [ev.Log("finished: completed (reached max_iters) after 20 steps")]


def test_follower_of_a_resumed_legacy_run_skips_the_old_log(tmp_path):
    run = Run(tmp_path / "r")
    run.path.mkdir()
    run.log("old line")
    follower = RunFollower(run, 10, log_offset=run.file("train.log").stat().st_size)
    run.log("resuming run r at step 5")
    assert follower.poll() == [ev.Log("resuming run r at step 5")]


def test_started_event_round_trips_through_the_launch_folder(tmp_path):
    from gptui.core.follow import _started_event

    started = ev.Started("r", str(tmp_path), 100, "cpu", "float32", 5, 50, {"batch_size": 4}, 2)
    folder = LaunchDir(tmp_path)
    folder.write_started(dataclasses.asdict(started))
    assert _started_event(folder.started()) == started
    assert folder.run().path == tmp_path

