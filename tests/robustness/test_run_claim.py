"""One writer per run (issue 21): the claim is taken atomically before anything is written, by the command
line, the TUI and the launcher alike; the OS drops it when its holder dies, kill -9 included."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from support import ENV, assert_one_line_error, gptui, gptui_background

from gptui.core.claim import CLAIM, claim_run, claimed, read_holder
from gptui.core.errors import InputError, RunBusy
from gptui.core.runs import RunStore, check_run
from gptui.core.trainer import TrainJob

SLOW = ["--set", "max_iters=1000000", "--set", "eval_interval=20", "--set", "sample_interval=0"]


@pytest.fixture
def stopped_run(small_workspace, small_config):
    """A tiny run trained 12 steps, then resumable."""
    finished = TrainJob(small_workspace, "tiny", small_config, name="claimed").run()
    return RunStore(small_workspace).resolve(finished.run_id)


def evals(run) -> list[int]:
    return [m["step"] for m in run.metrics() if m["type"] == "eval"]


def test_a_claim_is_exclusive_until_released(tmp_path):
    first = claim_run(tmp_path, "r")
    with pytest.raises(RunBusy, match=rf"run r is already training in another process \(pid {os.getpid()}\)"):
        claim_run(tmp_path, "r")
    assert claimed(tmp_path)
    first.release()
    assert not claimed(tmp_path) and read_holder(tmp_path) is None
    with claim_run(tmp_path, "r"):
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_a_claim_held_by_a_process_killed_with_sigkill_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gptui.core.claim import claim_run; "
         "c = claim_run(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"pid {holder.pid}"):
            claim_run(tmp_path)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
    assert read_holder(tmp_path)["pid"] == holder.pid  # it names the dead process, but holds nothing
    assert not claimed(tmp_path)
    with claim_run(tmp_path):
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_a_claim_file_replaced_by_hand_is_not_held_twice(tmp_path):
    with claim_run(tmp_path):
        (tmp_path / CLAIM).unlink()
        second = claim_run(tmp_path)  # a new file: a new lock; the first holder's no longer guards anything
        assert second.held
        second.release()


def race(workspace, run_id: str, max_iters: int) -> list:
    """Two resumes of one run released at the same instant; what each ended with (a status or the refusal)."""
    gate = threading.Barrier(2)
    outcomes: list = []

    def resume() -> None:
        job = TrainJob(workspace, None, None, resume=run_id, overrides={"max_iters": str(max_iters)})
        gate.wait()
        try:
            outcomes.append(job.run().status)
        except InputError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_two_resumes_started_at_the_same_moment_one_trains_one_is_refused(stopped_run, small_workspace):
    """Many rounds of two resumes released together: the check and the claim are one atomic step."""
    for rnd in range(8):
        outcomes = race(small_workspace, stopped_run.id, 12 + 6 * (rnd + 1))
        refused = [o for o in outcomes if isinstance(o, RunBusy)]
        assert outcomes.count("completed") == 1 and len(refused) == 1, outcomes
        assert "already training in another process" in str(refused[0])
        assert evals(stopped_run) == sorted(set(evals(stopped_run))), "an evaluation written twice"
        assert stopped_run.read_state()["status"] == "completed"
        assert stopped_run.read_state()["step"] == 12 + 6 * (rnd + 1)
    assert check_run(stopped_run) is None


@pytest.mark.slow
def test_two_command_line_resumes_at_once_one_trains_one_is_refused_in_one_line(stopped_run):
    home = stopped_run.path.parent.parent
    for _ in range(2):
        step = stopped_run.read_state()["step"]
        procs = [gptui_background(home, "train", "--resume", stopped_run.id, "--max-minutes", "0.1", *SLOW)
                 for _ in range(2)]
        results = [(p, *p.communicate(timeout=180)) for p in procs]
        codes = sorted(p.returncode for p, _, _ in results)
        assert codes == [0, 2], [(p.returncode, err[-500:]) for p, _, err in results]
        (_, _, refused), = [r for r in results if r[0].returncode == 2]
        line = assert_one_line_error(subprocess.CompletedProcess([], 2, "", refused), 2,
                                     f"run {stopped_run.id} is already training in another process (pid ")
        assert "Traceback" not in line
        (_, out, _), = [r for r in results if r[0].returncode == 0]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["steps"] > step and summary["reason"].startswith("time budget")
        assert evals(stopped_run) == sorted(set(evals(stopped_run))), "an evaluation written twice"
        assert stopped_run.read_state()["step"] == summary["steps"]


def test_a_claimed_run_is_refused_by_resume_and_the_launcher_and_left_as_it_was(stopped_run, small_workspace):
    home = stopped_run.path.parent.parent
    before = {p.name: p.read_bytes() for p in stopped_run.path.iterdir() if p.name != CLAIM}
    with claim_run(stopped_run.path, stopped_run.id):  # another process's, as far as the commands can tell
        for extra in ([], ["--nproc-per-node", "1"]):
            result = gptui(home, "train", "--resume", stopped_run.id, *extra)
            assert_one_line_error(result, 2, f"run {stopped_run.id} is already training in another process")
        assert check_run(stopped_run) is None  # a run being written is not judged
        store = RunStore(small_workspace)
        with pytest.raises(InputError, match="is training; stop it before deleting"):
            store.delete(stopped_run)
        with pytest.raises(InputError, match="is training; stop it before renaming"):
            store.rename(stopped_run, "elsewhere")
    assert {p.name: p.read_bytes() for p in stopped_run.path.iterdir() if p.name != CLAIM} == before


def test_a_new_run_is_claimed_from_its_first_file(small_workspace, small_config):
    """The trainer holds its run's claim while it trains and lets go when it ends."""
    from gptui.core import events as ev

    seen = []

    def look(e):
        if isinstance(e, ev.Started):
            seen.append(claimed(RunStore(small_workspace).resolve(e.run_id).path))

    config = dataclasses.replace(small_config, max_iters=4, eval_interval=2)
    result = TrainJob(small_workspace, "tiny", config, on_event=look).run()
    run = RunStore(small_workspace).resolve(result.run_id)
    assert seen == [True] and not claimed(run.path)
    assert json.loads(run.file(CLAIM).read_text() or "null") is None  # no owner named once it ended


@pytest.mark.slow
def test_two_launches_of_one_run_at_once_one_trains_one_is_refused(stopped_run):
    """`--nproc-per-node` launches: the launcher looks first, and rank 0 claims the run for the job."""
    home = stopped_run.path.parent.parent
    procs = [gptui_background(home, "train", "--resume", stopped_run.id, "--nproc-per-node", "1",
                              "--max-minutes", "0.15", *SLOW) for _ in range(2)]
    results = [(p, *p.communicate(timeout=300)) for p in procs]
    assert sorted(p.returncode for p, _, _ in results) == [0, 2], [(p.returncode, e[-500:]) for p, _, e in results]
    (_, _, refused), = [r for r in results if r[0].returncode == 2]
    assert_one_line_error(subprocess.CompletedProcess([], 2, "", refused), 2,
                          f"run {stopped_run.id} is already training in another process")
    assert evals(stopped_run) == sorted(set(evals(stopped_run))), "an evaluation written twice"
    assert stopped_run.read_state()["status"] == "completed"
