"""Issue 21's wording, file modes and resume budgets: every error one true line, every run file one mode."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from gptui.cli import main
from gptui.core.runs import RunStore
from gptui.core.trainer import TrainJob

NINES = "9" * 5000


@pytest.fixture
def trained(small_workspace, small_config):
    run_id = TrainJob(small_workspace, "tiny", small_config, name="worded").run().run_id
    return small_workspace.home, RunStore(small_workspace).resolve(run_id)


def run_cli(capsys, home, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("setting", "words"), [
    ("n_layer", "n_layer must be between 1 and 128, not '999"),
    ("lr", "lr must be greater than 0 and at most 1, not '999"),
    ("seed", "seed must be between 0 and 4294967295, not '999"),
])
def test_a_huge_number_is_out_of_range_and_shown_short(small_workspace, capsys, setting, words):
    home = small_workspace.home
    code, _, err = run_cli(capsys, home, "train", "--input", "tiny", "--set", f"{setting}={NINES}")
    line = one_line(err)
    assert code == 2 and words in line and "(5,000 characters)" in line and len(line) < 160, line


def test_a_long_word_for_a_number_is_shown_short(small_workspace, capsys):
    home = small_workspace.home
    code, _, err = run_cli(capsys, home, "train", "--input", "tiny", "--set", "n_layer=" + "x" * 3000)
    line = one_line(err)
    assert code == 2 and "n_layer must be a whole number, not 'xxx" in line and len(line) < 160, line


def test_a_generate_seed_out_of_range_says_the_range(trained, capsys):
    home, run = trained
    code, out, err = run_cli(capsys, home, "generate", "--run", run.id, "--seed", "99999999999999999999999")
    assert code == 2 and out == ""
    assert one_line(err) == ("gptui: error: seed must be between 0 and 9223372036854775807, "
                             "not 99999999999999999999999")


def test_an_export_that_cannot_be_written_names_the_target_not_a_temporary_file(trained, capsys):
    home, run = trained
    code, _, err = run_cli(capsys, home, "export", run.id, "--out", "/proc/x")
    line = one_line(err)
    assert code == 1 and line.startswith("gptui: error: cannot write the export to /proc/x: "), line
    assert ".tmp" not in line


def test_generate_save_into_a_file_is_refused_before_generating(trained, capsys):
    home, run = trained
    run.file("generations").write_text("not a folder")
    code, out, err = run_cli(capsys, home, "generate", "--run", run.id, "--max-new-tokens", "3", "--save")
    assert code == 1 and out == "", "nothing generated, so no transcript is lost"
    folder = run.file("generations")
    assert one_line(err) == f"gptui: error: cannot save in run {run.id}: {folder} is not a folder"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_every_run_file_gets_the_mode_the_umask_gives(small_workspace, small_config, tmp_path, mask):
    old = os.umask(mask)
    try:
        run_id = TrainJob(small_workspace, "tiny", small_config).run().run_id
        run = RunStore(small_workspace).resolve(run_id)
        run.save_generation({"run": run.id}, "text")
        exported = tmp_path / "exported"
        assert main(["--home", str(small_workspace.home), "export", run.id, "--out", str(exported)]) == 0
    finally:
        os.umask(old)
    files = [p for p in run.path.rglob("*") if p.is_file()] + list(exported.iterdir())
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {"model.safetensors", "checkpoint.pt", "config.json", ".claim"} <= modes.keys()
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes
    assert stat.S_IMODE(exported.stat().st_mode) == 0o777 & ~mask


def _spend(run, seconds: float) -> None:
    """Make the run's checkpoint say it has trained this long already."""
    checkpoint = torch.load(run.file("checkpoint.pt"), weights_only=True)
    checkpoint["elapsed"] = seconds
    torch.save(checkpoint, run.file("checkpoint.pt"))


def test_a_resume_with_a_budget_trains_that_much_more(trained, capsys):
    home, run = trained
    _spend(run, 10_000.0)  # far past the budget below, counted over the whole run
    code, out, err = run_cli(capsys, home, "train", "--resume", run.id, "--max-minutes", "0.02",
                             "--set", "max_iters=10000000", "--set", "eval_interval=1000000")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["reason"] == "time budget of 0.02 min reached" and summary["steps"] > 12, summary


def test_a_resume_whose_own_budget_is_spent_is_refused_in_one_line(small_workspace, small_config, capsys):
    # trained without a budget (with one its schedule would fill the 5 minutes), then given the run's own budget
    run = RunStore(small_workspace).resolve(TrainJob(small_workspace, "tiny", small_config).run().run_id)
    settings = run.read_config()["settings"]
    run.update_config(settings={**settings, "max_minutes": 5.0})
    _spend(run, 301.0)
    home = small_workspace.home
    code, out, err = run_cli(capsys, home, "train", "--resume", run.id, "--set", "max_iters=100")
    assert code == 2 and out == ""
    assert one_line(err) == (f"gptui: error: run {run.id} has used its time budget (5 min over the whole "
                             "run); resume with --max-minutes M to train M more minutes")
    assert run.read_state()["step"] == 12 and run.read_state()["status"] == "completed"


def test_the_help_says_what_max_minutes_means_on_a_resume(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "with --resume: this many more minutes" in text
