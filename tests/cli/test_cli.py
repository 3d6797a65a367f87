"""The command line end to end, in subprocesses as a user runs it: exit codes 0/2/1, one-line errors on stderr,
JSON on stdout, deterministic generation, the cache, ctrl-c then resume.

Each subprocess imports torch (about 2 s), so runs are shared through module-scoped fixtures where possible.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import ENV, assert_one_line_error, gptui, gptui_background, interrupt_training, took_a_step

TINY_SETS: list[str] = []


def sets(overrides: dict) -> list[str]:
    out: list[str] = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={value}"]
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory, make_corpus_text) -> Path:
    home = tmp_path_factory.mktemp("cli")
    (home / "inputs").mkdir()
    (home / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    return home


@pytest.fixture(scope="module")
def trained(home, tiny_overrides):
    """One tiny run trained through the CLI: (completed process, summary dict)."""
    result = gptui(home, "train", "--input", "tiny", "--preset", "tiny-classic", *sets(tiny_overrides))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return result, summary


# --- success paths -----------------------------------------------------------------------------------------------


def test_train_prints_a_json_summary(home, trained):
    result, summary = trained
    assert result.stdout.strip().count("\n") == 0, "stdout holds only the JSON summary"
    assert summary["status"] == "completed"
    assert summary["steps"] == 20
    assert summary["reason"] == "reached max_iters"
    assert summary["best_val_loss"] > 0 and summary["best_val_bpb"] > 0
    assert {"run", "seconds", "tokens_per_sec"} <= set(summary)
    run_dir = home / "models" / summary["run"]
    assert {"config.json", "tokenizer.json", "model.safetensors", "checkpoint.pt", "metrics.jsonl", "train.log",
            "state.json"} <= {p.name for p in run_dir.iterdir()}
    assert "step 10: train" in result.stderr and "step 20: train" in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_table_and_json(home, trained):
    _, summary = trained
    table = gptui(home, "runs")
    assert table.returncode == 0
    assert "RUN" in table.stdout and summary["run"] in table.stdout and "completed" in table.stdout
    listing = gptui(home, "runs", "--json")
    assert listing.returncode == 0
    data = json.loads(listing.stdout)
    (entry,) = [r for r in data if r["id"] == summary["run"]]
    assert set(entry) == {"id", "corpus", "params", "tokenizer", "steps", "best_val_loss", "val_bpb", "status",
                          "created", "duration", "damaged", "world_size"}
    assert entry["world_size"] == 1
    assert entry["corpus"] == "tiny" and entry["steps"] == 20 and entry["status"] == "completed"
    assert entry["tokenizer"] == "char" and entry["damaged"] is None
    assert entry["best_val_loss"] == pytest.approx(summary["best_val_loss"])


def test_generate_several_samples_in_one_batch(home, trained):
    _, summary = trained
    args = ["generate", "--run", summary["run"], "--prompt", "First", "--seed", "4", "--max-new-tokens", "15",
            "--num-samples", "3", "--dtype", "float32"]
    a = gptui(home, *args)
    assert a.returncode == 0, a.stderr
    assert gptui(home, *args).stdout == a.stdout, "same seed, same samples"
    parts = a.stdout.split("--- sample ")
    assert parts[0] == "" and [p.split(" ---\n")[0] for p in parts[1:]] == ["1", "2", "3"]
    texts = [p.split(" ---\n", 1)[1].rstrip("\n") for p in parts[1:]]
    assert all(t.startswith("First") and len(t) == len("First") + 15 for t in texts)
    assert len(set(texts)) > 1

    saved = gptui(home, *args, "--save")
    assert saved.returncode == 0 and saved.stdout == a.stdout
    path = Path(saved.stderr.strip().split("saved ", 1)[1])
    content = path.read_text(encoding="utf-8")
    assert "# num_samples: 3" in content and "# dtype: float32" in content
    assert all(t in content for t in texts)
    path.unlink()


@pytest.mark.parametrize("args,fragment", [
    (["--num-samples", "0"], "between 1 and 64"),
    (["--num-samples", "65"], "between 1 and 64"),
    (["--dtype", "float16"], "float16"),
])
def test_generate_bad_samples_or_dtype(home, trained, args, fragment):
    assert_one_line_error(gptui(home, "generate", "--run", trained[1]["run"], *args), 2, fragment)


def test_generate_bfloat16_where_unsupported_exits_2(tmp_path, monkeypatch, capsys):
    """In-process, with the CPU made to lack bf16: one line, exit 2, nothing written."""
    import gptui.core.device as device
    from gptui.cli import main

    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    run = tmp_path / "models" / "run-1"
    run.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors", "state.json"):
        (run / name).write_text("{}")
    code = main(["--home", str(tmp_path), "generate", "--run", "run-1", "--device", "cpu", "--dtype", "bfloat16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bfloat16" in err and "float32" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.safetensors", "state.json",
                                                     "tokenizer.json"]


def test_generate_same_seed_same_text_and_save(home, trained):
    _, summary = trained
    prefix = summary["run"][:15]  # date-time: unique while this module's home has one run
    args = ["generate", "--run", prefix, "--prompt", "First Citizen:", "--seed", "1", "--max-new-tokens", "20"]
    a = gptui(home, *args)
    b = gptui(home, *args)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    assert a.stdout.startswith("First Citizen:")
    assert len(a.stdout.rstrip("\n")) >= len("First Citizen:") + 1
    # the speed on stderr, never mixed into the text
    assert re.fullmatch(r"20 tokens in \d+\.\d\d s: [\d,]+ tok/s \((float32|bfloat16), cpu\)\n", a.stderr), a.stderr

    saved = gptui(home, *args, "--save")
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout == a.stdout
    files = list((home / "models" / summary["run"] / "generations").glob("*.txt"))
    assert len(files) == 1
    assert str(files[0].name) in saved.stderr
    content = files[0].read_text(encoding="utf-8")
    assert f"# run: {summary['run']}" in content
    assert "# settings: " in content and "# time: " in content
    assert '# prompt: "First Citizen:"' in content
    assert content.rstrip("\n").endswith(a.stdout.rstrip("\n"))


def test_prepare_twice_is_a_cache_hit(home):
    args = ["prepare", "--input", "tiny", "--tokenizer", "bpe", "--vocab-size", "300"]
    first = gptui(home, *args)
    assert first.returncode == 0, first.stderr
    assert "cache hit" not in first.stdout and "tokens" in first.stdout
    second = gptui(home, *args)
    assert second.returncode == 0, second.stderr
    assert "cache hit" in second.stdout
    assert first.stdout.split(";")[0] == second.stdout.split(";")[0], "same token count and tokenizer"


def test_prepare_without_a_vocabulary_size_prepares_the_default_presets(home):
    """So a later `gptui train` with the default preset finds the tokens cached."""
    from gptui.core.config import DEFAULT_PRESET, preset_config

    first = gptui(home, "prepare", "--input", "tiny")
    assert first.returncode == 0, first.stderr
    vocab = preset_config(DEFAULT_PRESET).vocab_size
    same = gptui(home, "prepare", "--input", "tiny", "--tokenizer", "bpe", "--vocab-size", str(vocab))
    assert same.returncode == 0 and "cache hit" in same.stdout, same.stdout


def test_corpora(home):
    result = gptui(home, "corpora")
    assert result.returncode == 0
    size = (home / "inputs" / "tiny.txt").stat().st_size
    assert "tiny" in result.stdout and f"{size:,}" in result.stdout
    data = json.loads(gptui(home, "corpora", "--json").stdout)
    (entry,) = [c for c in data if c["name"] == "tiny"]
    assert entry["bytes"] == size and entry["chars"] == size and entry["error"] is None


# --- bad input: exit 2, one line, no traceback ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_home(tmp_path_factory, make_corpus_text) -> Path:
    home = tmp_path_factory.mktemp("cli-bad")
    inputs = home / "inputs"
    inputs.mkdir()
    (inputs / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    (inputs / "latin1.txt").write_bytes(b"good text\n" * 50 + b"caf\xe9\n")
    (inputs / "short.txt").write_text("too short\n", encoding="utf-8")
    return home


BAD_INPUT = {
    "unknown corpus": (["train", "--input", "nosuch"], ["nosuch"]),
    "n_embd not divisible by n_head": (["train", "--input", "tiny", "--set", "n_head=5"], ["divisible"]),
    "lr not a number": (["train", "--input", "tiny", "--set", "lr=abc"], ["lr", "abc"]),
    "unknown setting": (["train", "--input", "tiny", "--set", "n_layers=2"], ["did you mean n_layer"]),
    "not KEY=VALUE": (["train", "--input", "tiny", "--set", "n_layer"], ["KEY=VALUE"]),
    "unknown preset": (["train", "--input", "tiny", "--preset", "huge"], ["huge"]),
    "non-UTF-8 corpus": (["train", "--input", "latin1"], ["latin1.txt", "offset 503"]),
    "non-UTF-8 corpus, prepare": (["prepare", "--input", "latin1", "--tokenizer", "char"], ["offset 503"]),
    "too-short corpus": (["train", "--input", "short", "--set", "tokenizer=char"], ["too short", "block_size"]),
    "unknown run": (["generate", "--run", "nosuch"], ["nosuch"]),
    "unknown resume run": (["train", "--resume", "nosuch"], ["nosuch"]),
    "no trained runs": (["generate", "--prompt", "x"], ["no trained runs"]),
    "unknown flag": (["train", "--bogus"], ["--bogus"]),
    "unknown command": (["fly"], ["fly"]),
    "bad int option": (["generate", "--max-new-tokens", "many"], ["many"]),
    "train without input": (["train"], ["--input"]),
    "missing prompt file": (["generate", "--prompt-file", "nosuch.txt"], ["nosuch.txt"]),
    "bad vocab size": (["prepare", "--input", "tiny", "--vocab-size", "100"], ["vocab-size"]),
    "unknown fine-tune run": (["train", "--input", "tiny", "--init-from", "nosuch"], ["nosuch"]),
    "fine-tune without a corpus": (["train", "--init-from", "nosuch"], ["--init-from needs --input"]),
    "fine-tune and resume": (["train", "--input", "tiny", "--init-from", "a", "--resume", "a"],
                             ["--init-from cannot be combined with --resume"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(bad_home, case):
    args, fragments = BAD_INPUT[case]
    assert_one_line_error(gptui(bad_home, *args), 2, *fragments)
    assert not any((bad_home / "models").glob("*/config.json")), "refused input creates no run"


def test_non_utf8_corpus_accepted_with_replace_errors(tmp_path, tiny_overrides):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "latin1.txt").write_bytes(("good text line\n" * 60).encode() + b"caf\xe9\n")
    result = gptui(tmp_path, "train", "--input", "latin1", "--replace-errors",
                   *sets(tiny_overrides | {"max_iters": 4, "warmup_iters": 1, "eval_interval": 4,
                                           "sample_interval": 0}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"


@pytest.mark.parametrize("args,fragment", [(["--max-new-tokens", "0"], "max new tokens"),
                                           (["--top-p", "2"], "top-p"), (["--temperature", "-1"], "temperature")])
def test_generate_bad_sampling_settings(home, trained, args, fragment):
    assert_one_line_error(gptui(home, "generate", "--run", trained[1]["run"], *args), 2, fragment)


def test_home_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x", encoding="utf-8")
    assert_one_line_error(gptui(f, "runs"), 2, "not a folder")


# --- fine-tuning (train --init-from) ----------------------------------------------------------------------------


@pytest.fixture
def tune_home(tmp_path, home, trained) -> Path:
    """A workspace holding a copy of the trained run and two more corpora: `other` (the tiny corpus's lines in
    reverse, the same characters) and `accents` (characters the run's char tokenizer never saw)."""
    import shutil

    run_id = trained[1]["run"]
    shutil.copytree(home / "models" / run_id, tmp_path / "models" / run_id)
    (tmp_path / "inputs").mkdir()
    text = (home / "inputs" / "tiny.txt").read_text(encoding="utf-8")
    (tmp_path / "inputs" / "other.txt").write_text("\n".join(reversed(text.splitlines())) + "\n", encoding="utf-8")
    (tmp_path / "inputs" / "accents.txt").write_text(text + "café über straße\n", encoding="utf-8")
    return tmp_path


def test_fine_tune_from_the_command_line(tune_home, trained):
    run_id = trained[1]["run"]
    result = gptui(tune_home, "train", "--init-from", run_id[:15], "--input", "other", "--name", "tuned",
                   "--set", "max_iters=4", "--set", "eval_interval=2", "--set", "warmup_iters=1")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["steps"] == 4 and "tuned" in summary["run"]
    assert f"fine-tuning: starts from run {run_id}'s best weights" in result.stderr
    config = json.loads((tune_home / "models" / summary["run"] / "config.json").read_text(encoding="utf-8"))
    source = json.loads((tune_home / "models" / run_id / "config.json").read_text(encoding="utf-8"))
    assert config["init_from"] == run_id and config["corpus"] == "other"
    assert config["settings"] == {**source["settings"], "max_iters": 4, "eval_interval": 2, "warmup_iters": 1}

    # --preset gives the other settings; the shape stays the run's
    preset = gptui(tune_home, "train", "--init-from", run_id, "--input", "other", "--preset", "lecture",
                   "--set", "max_iters=2", "--set", "eval_interval=2", "--set", "eval_iters=2",
                   "--set", "batch_size=4", "--set", "device=cpu", "--set", "dtype=float32")
    assert preset.returncode == 0, preset.stderr
    settings = json.loads((tune_home / "models" / json.loads(preset.stdout)["run"] / "config.json")
                          .read_text(encoding="utf-8"))["settings"]
    assert settings["n_layer"] == source["settings"]["n_layer"] and settings["lr"] == 3e-4


@pytest.mark.parametrize("args,fragments", [
    (["--input", "other", "--set", "n_layer=2"], ["cannot change n_layer when fine-tuning run"]),
    (["--input", "other", "--set", "tokenizer=bpe", "--set", "block_size=64"],
     ["cannot change block_size, tokenizer", "block_size=32"]),
    (["--input", "accents"], ["char tokenizer cannot encode accents.txt", "4 characters", "'b'", "'é'", "'ß'", "'ü'"]),
    (["--input", "nosuch"], ["nosuch"]),
])
def test_fine_tune_bad_input_exits_2_before_a_run_exists(tune_home, trained, args, fragments):
    assert_one_line_error(gptui(tune_home, "train", "--init-from", trained[1]["run"], *args), 2, *fragments)
    assert [p.name for p in (tune_home / "models").iterdir()] == [trained[1]["run"]]


# --- failures: exit 1 ------------------------------------------------------------------------------------------


def test_generate_from_a_damaged_run_exits_1(tmp_path, trained, home):
    import shutil

    _, summary = trained
    dest = tmp_path / "models" / summary["run"]
    shutil.copytree(home / "models" / summary["run"], dest)
    weights = dest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = assert_one_line_error(gptui(tmp_path, "generate", "--run", summary["run"], "--max-new-tokens", "5"), 1,
                                 "damaged")
    assert "model.safetensors" in line
    listing = json.loads(gptui(tmp_path, "runs", "--json").stdout)
    assert listing[0]["status"] == "damaged" and "model.safetensors" in listing[0]["damaged"]


# --- ctrl-c, then resume ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigint_stops_and_resume_completes(tmp_path, make_corpus_text, tiny_overrides):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    overrides = tiny_overrides | {"max_iters": 1_000_000, "sample_interval": 0}
    code, out, err = interrupt_training(tmp_path, ["--input", "tiny", *sets(overrides)],
                                        lambda line: line.startswith("step 10: train"), "its first evaluation",
                                        deadline=120)
    assert code == 0, err
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "stopped"
    assert "interrupted" in summary["reason"]
    stopped_at = summary["steps"]
    assert 10 <= stopped_at < 1_000_000
    state = json.loads((tmp_path / "models" / summary["run"] / "state.json").read_text(encoding="utf-8"))
    assert state["status"] == "stopped" and state["step"] == stopped_at

    target = stopped_at + 15
    resumed = gptui(tmp_path, "train", "--resume", summary["run"][:15], "--set", f"max_iters={target}")
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert done["run"] == summary["run"]
    assert done["status"] == "completed" and done["steps"] == target
    metrics = [json.loads(x) for x in
               (tmp_path / "models" / summary["run"] / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train_steps = [m["step"] for m in metrics if m["type"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == target


@pytest.mark.slow
def test_sigint_before_the_first_evaluation_leaves_weights_to_talk_to(tmp_path, make_corpus_text, tiny_overrides):
    """ctrl-c before the first evaluation: one more evaluation, the weights saved, and `generate` works."""
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    overrides = tiny_overrides | {"max_iters": 1_000_000, "eval_interval": 100_000, "sample_interval": 0}
    code, out, err = interrupt_training(tmp_path, ["--input", "tiny", *sets(overrides)], took_a_step,
                                        "taking a step")
    assert code == 0, err
    assert "Traceback" not in err and "stopping: evaluating and saving" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "stopped" and 0 < summary["steps"] < 100_000
    assert summary["best_val_loss"] is not None
    run = tmp_path / "models" / summary["run"]
    assert (run / "model.safetensors").is_file()
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
             if '"eval"' in x]
    assert [e["step"] for e in evals] == [summary["steps"]]
    talk = gptui(tmp_path, "generate", "--prompt", "First", "--max-new-tokens", "10", "--seed", "1")
    assert talk.returncode == 0, talk.stderr
    # at most 10 tokens: a barely trained model may end its text early with the end-of-text token
    assert talk.stdout.startswith("First") and len("First") <= len(talk.stdout.rstrip("\n")) <= len("First") + 10


@pytest.mark.slow
def test_max_minutes_budget_then_resume(tmp_path, make_corpus_text, tiny_overrides):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "tiny.txt").write_text(make_corpus_text(), encoding="utf-8")
    overrides = tiny_overrides | {"max_iters": 1_000_000, "sample_interval": 0, "eval_interval": 1000}
    first = gptui(tmp_path, "train", "--input", "tiny", "--max-minutes", "0.002", *sets(overrides))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["status"] == "completed" and "time budget" in summary["reason"]
    assert 0 < summary["steps"] < 1_000_000
    resumed = gptui(tmp_path, "train", "--resume", summary["run"], "--max-minutes", "0",
                    "--set", f"max_iters={summary['steps'] + 5}")
    assert resumed.returncode == 0, resumed.stderr
    done = json.loads(resumed.stdout)
    assert done["status"] == "completed" and done["steps"] == summary["steps"] + 5


# --- regressions: engine bugs these tests found (fixed in 96d9c61) -----------------------------------------


@pytest.mark.parametrize("value", ["abc", "0"])
def test_resume_with_bad_set_exits_2(home, trained, value):
    _, summary = trained
    result = gptui(home, "train", "--resume", summary["run"], "--set", f"max_iters={value}")
    line = assert_one_line_error(result, 2, "max_iters")
    assert "ConfigError" not in line


def test_generate_into_a_closed_pipe_stops_quietly(home, trained):
    """`gptui generate | head -c 5`: once the reader has gone, gptui stops with SIGPIPE's status and says nothing."""
    _, summary = trained
    proc = gptui_background(home, "generate", "--run", summary["run"], "--prompt", "First", "--max-new-tokens",
                            "100000", "--seed", "1")
    assert proc.stdout.read(5) == "First"
    proc.stdout.close()
    try:
        assert proc.wait(timeout=60) == 141
    finally:
        proc.kill()
    assert proc.stderr.read() == ""


def test_generate_non_utf8_prompt_exits_2(home, trained):
    _, summary = trained
    result = subprocess.run(
        [sys.executable, "-m", "gptui", "--home", str(home), "generate", "--run", summary["run"],
         "--max-new-tokens", "5", "--prompt", os.fsencode("caf\udce9")],
        capture_output=True, text=True, timeout=120, env=ENV, cwd=home,
    )
    line = assert_one_line_error(result, 2, "UTF-8")
    assert "UnicodeEncodeError" not in line


@pytest.mark.parametrize("raw,expected", [
    ("\\n\\n", "\n\n"), ("ROMEO:", "ROMEO:"),
    ("é", "é"), ("—\\n", "—\n"),
])
def test_generate_stop_string_is_passed_through(tmp_path, monkeypatch, capsys, raw, expected):
    """In-process: the CLI's --stop parsing, with the model replaced by a stub that records the settings."""
    import gptui.core.generate as generate
    from gptui.cli import main

    (tmp_path / "models" / "run-1").mkdir(parents=True)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "x.txt").write_text("x", encoding="utf-8")
    seen = {}

    def fake_stream(loaded, prompt, settings, *a, **k):
        seen["stop"] = settings.stop
        yield 0, "ok"

    monkeypatch.setattr(generate, "load_model",
                        lambda run, device="auto", dtype="auto": SimpleNamespace(dtype="float32", device="cpu"))
    monkeypatch.setattr(generate, "stream_samples", fake_stream)
    assert main(["--home", str(tmp_path), "generate", "--run", "run-1", "--stop", raw]) == 0
    assert seen["stop"] == expected
