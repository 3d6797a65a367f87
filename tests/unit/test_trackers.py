"""Experiment trackers: the `trackers` setting, TensorBoard event files and W&B offline runs read back with
their own readers, resumes continuing them, the main rank only, and a listener that fails reported once.

Nothing here reaches the network: W&B runs offline with its folders in pytest's tmp_path, and each test checks
that no wandb service process is left behind."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
from pathlib import Path

import psutil
import pytest

from gptui.core import events as ev
from gptui.core.config import ConfigError, apply_overrides, check, config_to_dict
from gptui.core.distributed import Dist
from gptui.core.errors import InputError
from gptui.core.runs import RunStore
from gptui.core.trackers import check_available, memory_metrics, requested, wandb_mode
from gptui.core.trainer import TrainJob


@pytest.fixture
def tracked(small_config):
    """12 steps evaluated at 6 and 12, a sample at each, logged to both trackers."""
    return dataclasses.replace(small_config, sample_interval=6, trackers="tensorboard,wandb")


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """W&B as a user who never logged in: no key, an empty netrc, its config and caches under tmp_path."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_MODE",
                 "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "wandb-home"
    (home / "netrc").parent.mkdir()
    (home / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(home / "netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    yield
    leftovers = [p.name() for p in psutil.Process().children(recursive=True) if "wandb" in p.name().lower()]
    assert not leftovers, f"wandb processes left running: {leftovers}"


def train(ws, config, *, stop_at_eval: int | None = None, **kw):
    events: list = []
    job = None

    def on_event(e):
        events.append(e)
        if stop_at_eval is not None and isinstance(e, ev.Eval) and e.step >= stop_at_eval:
            job.stop()

    job = TrainJob(ws, "tiny" if kw.get("resume") is None else None, config, on_event=on_event, **kw)
    return job.run(), events


def only(events, kind):
    return [e for e in events if isinstance(e, kind)]


# --- the setting ---------------------------------------------------------------------------------------------


def test_trackers_default_to_none_and_accept_either_or_both_in_any_order(tiny_config):
    assert tiny_config.trackers == "none" and requested("none") == []
    for raw, stored in (("tensorboard", "tensorboard"), ("wandb", "wandb"), ("wandb,tensorboard", "tensorboard,wandb"),
                        (" tensorboard , wandb ", "tensorboard,wandb")):
        config = check(apply_overrides(tiny_config, {"trackers": raw}))
        assert config.trackers == stored
    assert requested("tensorboard,wandb") == ["tensorboard", "wandb"]
    for bad in ("mlflow", "none,wandb", "tensorboard,mlflow", ""):
        with pytest.raises(ConfigError, match="trackers must be one of"):
            apply_overrides(tiny_config, {"trackers": bad})


@pytest.mark.parametrize("project", ["", "a/b", "x:y", "p" * 129])
def test_a_project_name_wandb_refuses_is_refused_by_name(tiny_config, project):
    with pytest.raises(ConfigError) as err:
        check(dataclasses.replace(tiny_config, tracker_project=project))
    assert set(err.value.problems) == {"tracker_project"}


def test_a_missing_library_is_one_line_naming_the_extra_before_any_run_folder(workspace, corpus, small_config,
                                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb looks like to import
    with pytest.raises(InputError, match=r"needs wandb.*gptui\[track\]"):
        check_available("tensorboard,wandb")
    config = dataclasses.replace(small_config, trackers="wandb")
    with pytest.raises(InputError, match=r"gptui\[track\]"):
        TrainJob(workspace, "tiny", config).run()
    assert not any(workspace.models.iterdir()), "a refused run leaves no folder"


def test_the_command_line_refuses_a_missing_tracker_in_one_line_with_exit_2(workspace, corpus):
    import subprocess

    from support import ENV, assert_one_line_error

    # the interpreter of a user without wandb: `import wandb` fails and find_spec finds nothing
    script = "import sys; sys.modules['wandb'] = None; from gptui.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", script, "--home", str(workspace.home), "train", "--input", "tiny",
                             "--set", "trackers=tensorboard,wandb"], capture_output=True, text=True, env=ENV,
                            timeout=120)
    assert_one_line_error(result, 2, "trackers=tensorboard,wandb needs wandb", "gptui[track]")
    assert not any(workspace.models.iterdir())


def test_a_resume_that_asks_for_a_missing_tracker_is_refused_and_leaves_the_run_be(workspace, corpus, small_config,
                                                                                   monkeypatch):
    finished, _ = train(workspace, small_config)
    run = RunStore(workspace).resolve(finished.run_id)
    state, log = run.read_state(), run.file("train.log").read_text()
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(InputError, match="needs tensorboard"):
        TrainJob(workspace, None, None, resume=finished.run_id, overrides={"trackers": "tensorboard"}).run()
    assert run.read_state() == state and run.file("train.log").read_text() == log


def test_wandb_is_offline_unless_logged_in_or_told(tmp_path, monkeypatch):
    assert wandb_mode() == "offline"
    (tmp_path / "netrc2").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc2"))
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_wandb_online_without_credentials_is_refused_instead_of_prompting(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(InputError, match="wandb login"):
        check_available("wandb")
    check_available("tensorboard")


def test_memory_metrics_name_what_they_measure():
    assert memory_metrics({"kind": "process", "allocated": 2**20, "reserved": 2**20, "peak": 3 * 2**20}) == {
        "memory/rss_mib": 1.0, "memory/peak_mib": 3.0}
    assert memory_metrics({"kind": "cuda", "allocated": 2**20, "reserved": 2**21, "peak": 2**22}) == {
        "memory/allocated_mib": 1.0, "memory/reserved_mib": 2.0, "memory/peak_mib": 4.0}


# --- TensorBoard -----------------------------------------------------------------------------------------------


def tensorboard(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def texts(acc, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]


def test_tensorboard_holds_the_runs_metrics_samples_and_settings(workspace, corpus, tracked):
    config = dataclasses.replace(tracked, trackers="tensorboard")
    finished, events = train(workspace, config)
    run = RunStore(workspace).resolve(finished.run_id)
    acc = tensorboard(run.path)
    metrics = run.metrics()

    train_records = [m for m in metrics if m["type"] == "train"]
    assert scalars(acc, "train/loss") == [(m["step"], pytest.approx(m["loss"], rel=1e-5)) for m in train_records]
    assert [s for s, _ in scalars(acc, "train/lr")] == [m["step"] for m in train_records]
    assert all(v > 0 for _, v in scalars(acc, "train/tokens_per_sec"))
    assert all(v > 0 for _, v in scalars(acc, "memory/rss_mib"))
    evals = only(events, ev.Eval)
    assert scalars(acc, "eval/val_bpb") == [(e.step, pytest.approx(e.val_bpb, rel=1e-5)) for e in evals]
    assert scalars(acc, "eval/val_loss") == [(e.step, pytest.approx(e.val_loss, rel=1e-5)) for e in evals]

    samples = texts(acc, "samples/text_summary")
    assert [s for s, _ in samples] == [6, 12]
    sent = {e.step: e.text for e in only(events, ev.Sample)}
    for step, shown in samples:
        assert [line.strip() for line in shown.splitlines()] == [line.strip() for line in sent[step].splitlines()]

    settings = texts(acc, "config/text_summary")[0][1]
    for key, value in config_to_dict(config).items():
        assert f"| {key} | {value} |" in settings
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    given = start.session_start_info.hparams
    assert given["n_embd"].number_value == config.n_embd and given["trackers"].string_value == "tensorboard"
    assert given["run_id"].string_value == run.id


def test_a_resumed_run_continues_its_tensorboard_log_without_the_steps_it_replays(workspace, corpus, tracked):
    """Steps the previous session logged past its checkpoint (as a killed run leaves them) are dropped, so the
    curves show each step once, as an uninterrupted run would."""
    from torch.utils.tensorboard import SummaryWriter

    config = dataclasses.replace(tracked, trackers="tensorboard", max_iters=20, eval_interval=10, sample_interval=0)
    stopped, _ = train(workspace, config, stop_at_eval=10)
    run = RunStore(workspace).resolve(stopped.run_id)
    with SummaryWriter(str(run.file("tensorboard"))) as writer:  # logged after the checkpoint, then killed
        writer.add_scalar("train/loss", 99.0, 15)
    resumed, _ = train(workspace, None, resume=stopped.run_id)
    assert resumed.status == "completed" and resumed.step == 20

    acc = tensorboard(run.path)
    train_steps = [m["step"] for m in run.metrics() if m["type"] == "train"]
    assert [s for s, _ in scalars(acc, "train/loss")] == train_steps
    assert 99.0 not in [v for _, v in scalars(acc, "train/loss")]
    assert [s for s, _ in scalars(acc, "eval/val_bpb")] == [10, 20]


# --- W&B -------------------------------------------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The records of a W&B run's `.wandb` file: a 7-byte header, then LevelDB's log format (32 KiB blocks of
    chunks, each with a 7-byte header: checksum, length, type) holding one `Record` protobuf per entry."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # a block's padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            out.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return out


def wandb_run(folder: Path) -> dict:
    """One offline W&B run folder, read back: its run record, config, history by step and its files."""
    (log,) = folder.glob("run-*.wandb")
    records = wandb_records(log)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config, history = {}, {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config |= {u.key: json.loads(u.value_json) for u in r.config.update}
        elif r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(int(items["_step"]), {}).update(items)
    return {"run": run, "config": config, "history": history, "files": folder / "files"}


def test_wandb_offline_run_holds_the_runs_metrics_samples_and_settings(workspace, corpus, tracked):
    finished, events = train(workspace, tracked)
    assert finished.status == "completed"
    run = RunStore(workspace).resolve(finished.run_id)
    (folder,) = (run.path / "wandb").glob("offline-run-*")
    got = wandb_run(folder)

    assert got["run"].run_id == run.id and got["run"].display_name == run.id and got["run"].project == "gptui"
    assert run.read_config()["wandb_run_id"] == run.id
    for key, value in config_to_dict(tracked).items():
        assert got["config"][key] == value, key
    assert got["config"]["params"] == only(events, ev.Started)[0].params

    history = got["history"]
    for m in (m for m in run.metrics() if m["type"] in ("train", "eval")):  # not the log lines and samples
        row = history[m["step"]]
        if m["type"] == "train":
            assert row["train/loss"] == pytest.approx(m["loss"], rel=1e-5)
            assert row["train/lr"] == pytest.approx(m["lr"], abs=1e-6) and row["memory/rss_mib"] > 0
        else:
            assert row["eval/val_bpb"] == pytest.approx(m["val_bpb"], rel=1e-5)
            assert row["eval/val_loss"] == pytest.approx(m["val_loss"], rel=1e-5)
    table = json.loads((got["files"] / history[12]["samples/path"]).read_text())
    assert table["columns"] == ["step", "text"]
    assert table["data"] == [[e.step, e.text] for e in only(events, ev.Sample)]
    assert "W&B: offline run" in run.file("train.log").read_text()


def test_a_resumed_run_continues_the_same_wandb_run_even_after_a_rename(workspace, corpus, tracked):
    config = dataclasses.replace(tracked, trackers="wandb", max_iters=20, eval_interval=10, sample_interval=0)
    stopped, _ = train(workspace, config, stop_at_eval=10)
    store = RunStore(workspace)
    run = store.rename(store.resolve(stopped.run_id), "renamed")
    resumed, _ = train(workspace, None, resume=run.id)
    assert resumed.status == "completed" and resumed.step == 20

    first, second = (wandb_run(f) for f in sorted((run.path / "wandb").glob("offline-run-*")))
    assert first["run"].run_id == second["run"].run_id == stopped.run_id
    assert max(first["history"]) == 10 and min(second["history"]) > 10 and max(second["history"]) == 20


# --- the main rank only; a failing listener ----------------------------------------------------------------------


def test_a_non_main_rank_opens_no_tracker(workspace, corpus, tracked):
    from gptui.core.data import TokenizerSpec, prepare

    class SecondRank(Dist):
        def __init__(self):
            self.rank, self.world_size = 1, 2

        def from_main(self, work):
            return {"run_id": "20240101-000000-tiny", "settings": dataclasses.asdict(tracked),
                    "corpus": "tiny.txt", "corpus_sha256": data.corpus_sha256, "tokens": len(data.tokens),
                    "resume": False}

        def gather(self, value):
            return [value, value]

    data = prepare(corpus, TokenizerSpec.from_config(tracked), workspace.cache)
    before = sorted(workspace.home.rglob("*"))
    finished = TrainJob(workspace, None, None, dist=SecondRank()).run()
    assert finished.status == "completed"
    assert sorted(workspace.home.rglob("*")) == before


def test_a_listener_that_fails_is_reported_once_and_training_goes_on(workspace, corpus, small_config):
    calls = []

    def on_event(e):
        calls.append(e)
        raise RuntimeError("listener bug")

    finished = TrainJob(workspace, "tiny", small_config, on_event=on_event).run()
    assert finished.status == "completed" and len(calls) > 10
    log = RunStore(workspace).resolve(finished.run_id).file("train.log").read_text()
    assert log.count("listener bug") == 1
    assert "warning: listener test_a_listener_that_fails_is_reported_once_and_training_goes_on.<locals>.on_event " \
           "failed (RuntimeError: listener bug); training goes on without it" in log


def test_a_tracker_that_cannot_open_is_reported_once_and_the_run_completes(workspace, corpus, tracked, monkeypatch):
    import gptui.core.trackers as trackers

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trackers, "TensorBoardLogger", refuse)
    finished, events = train(workspace, dataclasses.replace(tracked, trackers="tensorboard"))
    assert finished.status == "completed" and len(only(events, ev.Eval)) == 2
    run = RunStore(workspace).resolve(finished.run_id)
    log = run.file("train.log").read_text()
    assert log.count("tensorboard tracker failed (OSError: disk full)") == 1
    assert [m["step"] for m in run.metrics() if m["type"] == "eval"] == [6, 12]
