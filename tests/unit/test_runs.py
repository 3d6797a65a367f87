"""Run folders: unique ids, safe names, resolution by prefix, listing with damaged runs, JSON keys."""

from __future__ import annotations

import json

import pytest

from gptui.core.errors import RunNotFound
from gptui.core.runs import RunStore, check_run, human_count, slugify


def test_run_ids_unique_within_the_same_second(workspace):
    store = RunStore(workspace)
    runs = [store.create("tiny", 14_700) for _ in range(5)]
    ids = [r.id for r in runs]
    assert len(set(ids)) == 5
    assert all(r.path.is_dir() and r.path.parent == workspace.models for r in runs)
    assert all("tiny" in i and "14.7K" in i for i in ids)
    named = [store.create("tiny", 1, name="same") for _ in range(3)]
    assert len({r.id for r in named}) == 3


def test_run_id_is_readable(workspace):
    run = RunStore(workspace).create("tinyshakespeare", 1_234_567)
    date, time_, rest = run.id.split("-", 2)
    assert len(date) == 8 and date.isdigit() and len(time_) == 6 and time_.isdigit()
    assert rest == "tinyshakespeare-1.2M"


@pytest.mark.parametrize(
    "name",
    ["a/b", "../../etc", "..", ".", "/abs/path", "x\0y", "\0", "a" * 300, "..." + "/" * 10, "-", " ",
     "名前 with spaces", "C:\\Windows\\system32", ".hidden", "~/home", "$(rm -rf)", "\n\t"],
)
def test_slugify_stays_inside_models(workspace, name):
    slug = slugify(name)
    assert slug and slug not in (".", "..")
    assert "/" not in slug and "\\" not in slug and "\0" not in slug
    assert not slug.startswith((".", "-"))
    assert len(slug) <= 64
    run = RunStore(workspace).create("tiny", 100, name=name)
    assert run.path.resolve().parent == workspace.models.resolve()
    assert len(run.id) <= 64 + 4


def test_slugify_keeps_safe_names():
    assert slugify("my-run_2.v1") == "my-run_2.v1"
    assert slugify("a b  c") == "a-b-c"
    assert slugify("") == "run"


def test_human_count():
    assert human_count(999) == "999"
    assert human_count(14_700) == "14.7K"
    assert human_count(2_500_000) == "2.5M"
    assert human_count(3e9) == "3.0B"


# --- resolve -----------------------------------------------------------------------------------------------------


@pytest.fixture
def store_with_runs(workspace):
    store = RunStore(workspace)
    for name in ("20260101-120000-alpha", "20260101-120000-beta", "20260202-090000-gamma"):
        (workspace.models / name).mkdir()
    return store


def test_resolve_exact_and_unique_prefix(store_with_runs, workspace):
    store = store_with_runs
    assert store.resolve("20260101-120000-alpha").id == "20260101-120000-alpha"
    assert store.resolve("20260202").id == "20260202-090000-gamma"
    assert store.resolve("20260101-120000-b").id == "20260101-120000-beta"
    assert store.resolve(" 20260202-090000-gamma/ ").id == "20260202-090000-gamma"
    assert store.resolve(str(workspace.models / "20260202-090000-gamma")).id == "20260202-090000-gamma"


def test_resolve_exact_match_wins_over_prefix(workspace):
    store = RunStore(workspace)
    (workspace.models / "run").mkdir()
    (workspace.models / "run-2").mkdir()
    assert store.resolve("run").id == "run"


def test_resolve_ambiguous_prefix(store_with_runs):
    with pytest.raises(RunNotFound) as info:
        store_with_runs.resolve("20260101")
    message = str(info.value)
    assert "matches 2 runs" in message
    assert "20260101-120000-alpha" in message and "20260101-120000-beta" in message


@pytest.mark.parametrize("ref", ["nope", "2027", "", "..", "../models", "/etc"])
def test_resolve_missing(store_with_runs, ref):
    with pytest.raises(RunNotFound):
        store_with_runs.resolve(ref)


def test_run_not_found_is_bad_input():
    assert RunNotFound("x").exit_code == 2


# --- list and damaged runs ---------------------------------------------------------------------------------------


def test_list_a_good_run(trained_workspace, trained_run):
    (info,) = RunStore(trained_workspace).list()
    assert info.id == trained_run.id
    assert info.damaged is None
    assert info.status == "completed"
    assert info.corpus == "tiny"
    assert info.tokenizer == "char"
    assert info.steps == 20
    assert info.params == trained_run.read_config()["params"]
    assert info.best_val_loss is not None and info.val_bpb is not None
    assert info.created == trained_run.read_config()["created"]
    assert check_run(trained_run) is None


def _damage(run, how: str) -> None:
    if how == "missing config":
        run.file("config.json").unlink()
    elif how == "invalid json config":
        run.file("config.json").write_text('{"settings": {', encoding="utf-8")
    elif how == "config without settings":
        run.file("config.json").write_text("[1, 2]", encoding="utf-8")
    elif how == "truncated weights":
        data = run.file("model.safetensors").read_bytes()
        run.file("model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "tiny weights file":
        run.file("model.safetensors").write_bytes(b"\x01\x02")
    elif how == "garbage weights header":
        run.file("model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    elif how == "missing weights":
        run.file("model.safetensors").unlink()
    elif how == "missing tokenizer":
        run.file("tokenizer.json").unlink()
    elif how == "tokenizer vocab mismatch":
        data = json.loads(run.file("tokenizer.json").read_text(encoding="utf-8"))
        data["chars"] = data["chars"][:-3]
        run.file("tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    elif how == "unreadable tokenizer":
        run.file("tokenizer.json").write_text("not json", encoding="utf-8")
    else:
        raise AssertionError(how)


DAMAGES = {
    "missing config": "config.json is missing",
    "invalid json config": "not valid JSON",
    "config without settings": "no settings",
    "truncated weights": "truncated",
    "tiny weights file": "truncated",
    "garbage weights header": "header",
    "missing weights": "model.safetensors is missing",
    "missing tokenizer": "tokenizer.json is missing",
    "tokenizer vocab mismatch": "tokens but the model expects",
    "unreadable tokenizer": "tokenizer.json is unreadable",
}


@pytest.mark.parametrize("how", list(DAMAGES))
def test_damaged_run_listed_with_reason(workspace, run_copy, how):
    import shutil

    from gptui.core.errors import DamagedRun
    from gptui.core.generate import load_model

    good = RunStore(workspace).create("tiny", 1000)  # a sibling that stays fine
    shutil.rmtree(good.path)
    shutil.copytree(run_copy.path, good.path)
    _damage(run_copy, how)
    infos = {i.id: i for i in RunStore(workspace).list()}
    info = infos[run_copy.id]
    assert info.status == "damaged"
    assert info.damaged and DAMAGES[how] in info.damaged
    assert infos[good.id].damaged is None
    with pytest.raises(DamagedRun, match="damaged"):
        load_model(run_copy, "cpu")


def test_list_survives_odd_folder_contents(workspace, run_copy):
    (workspace.models / "empty-folder").mkdir()
    (workspace.models / "stray-file.txt").write_text("hello", encoding="utf-8")
    (workspace.models / ".hidden").mkdir()
    run_copy.file("state.json").write_text("{{{", encoding="utf-8")
    infos = {i.id: i for i in RunStore(workspace).list()}
    assert set(infos) == {run_copy.id, "empty-folder"}
    assert infos["empty-folder"].damaged == "config.json is missing"
    assert infos[run_copy.id].status in ("unknown", "damaged")


def test_interrupted_run_is_listed_as_interrupted(workspace, run_copy):
    run_copy.write_state(status="running", pid=2**22 + 12345, host=None)  # no such process
    (info,) = [i for i in RunStore(workspace).list() if i.id == run_copy.id]
    assert info.status == "interrupted"


def test_newest_and_delete(workspace, run_copy):
    store = RunStore(workspace)
    assert store.newest().id == run_copy.id
    store.delete(run_copy)
    assert not run_copy.path.exists()
    assert store.newest() is None


def test_rename_sanitises(workspace, run_copy):
    store = RunStore(workspace)
    renamed = store.rename(run_copy, "../../escape attempt")
    assert renamed.path.parent == workspace.models
    assert renamed.id == "escape-attempt"
    assert renamed.file("config.json").is_file()


def test_save_generation_names_are_unique(workspace, run_copy):
    paths = {run_copy.save_generation({"run": run_copy.id}, f"text {i}") for i in range(3)}
    assert len(paths) == 3
    assert all(p.parent == run_copy.file("generations") for p in paths)


def test_runs_json_keys(workspace, run_copy, capsys):
    """`gptui runs --json`, run in-process (the subprocess version is in tests/cli)."""
    from gptui.cli import main

    assert main(["--home", str(workspace.home), "runs", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list) and len(data) == 1
    assert set(data[0]) == {"id", "corpus", "params", "tokenizer", "steps", "best_val_loss", "val_bpb", "status",
                            "created", "duration", "damaged", "world_size"}
    assert data[0]["id"] == run_copy.id and data[0]["status"] == "completed" and data[0]["damaged"] is None
