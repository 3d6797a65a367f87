"""Watching a training job that runs in other processes, through the files its rank 0 writes.

`TrainProcess` starts `python -m gptui train ... --nproc-per-node N` (the launcher, which starts torchrun) as a
child process; `RunFollower` turns the new lines of the run's `metrics.jsonl` and `train.log` into the same
events a `TrainJob` in this process sends, so the Train tab shows both alike. The launch folder (see
gptui.core.launch) says which run rank 0 trains once training starts; the run's `state.json` and the launcher's
one-line error say how it ended. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptui.core import events as ev
from gptui.core.launch import LAUNCH_DIR_VARIABLE, LaunchDir, worker_argv
from gptui.core.request import TrainRequest
from gptui.core.runs import LOG, METRICS, Run
from gptui.core.workspace import Workspace

POLL_SECONDS = 0.25
_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}  ?")
_SAMPLE = re.compile(r"^sample at step (\d+):$")
# lines the trainer writes on its own; one of them ends a sample's text
_TRAINER_LINE = re.compile(r"^(step +\d+ +train |sample at step \d+:$|finished: |failed: |resum|torch\.compile|"
                           r"data order changed|distributed: )")


class RunFollower:
    """Reads what a run folder gained since the last look and turns it into trainer events."""

    def __init__(self, run: Run, max_iters: int, log_offset: int = 0):
        self.run = run
        self.max_iters = max_iters
        self._offsets = {METRICS: 0, LOG: log_offset}
        self._sample: tuple[int, list[str]] | None = None
        self._sample_shown: str | None = None

    def _new_lines(self, name: str) -> list[str]:
        """Complete lines appended to one of the run's files since the last call (a torn last line waits)."""
        try:
            with open(self.run.file(name), "rb") as f:
                f.seek(self._offsets[name])
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offsets[name] += end + 1
        return data[:end].decode("utf-8", errors="replace").split("\n")

    def poll(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        for line in self._new_lines(METRICS):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            event = _metric_event(record, self.max_iters) if isinstance(record, dict) else None
            if event is not None:
                out.append(event)
        for line in self._new_lines(LOG):
            text = _STAMP.sub("", line)
            out.append(ev.Log(text))
            if self._sample is not None and _TRAINER_LINE.match(text):
                out += self._close_sample()
            if (match := _SAMPLE.match(text)) is not None:
                self._sample = (int(match.group(1)), [])
            elif self._sample is not None:
                self._sample[1].append(text)
        if self._sample is not None:  # shown as far as it got; updated if more of it arrives
            out += self._show_sample()
        return out

    def flush(self) -> list[ev.Event]:
        return self.poll() + self._close_sample()

    def _show_sample(self) -> list[ev.Event]:
        step, lines = self._sample  # type: ignore[misc]
        text = "\n".join(lines).rstrip("\n")
        if not text or text == self._sample_shown:
            return []
        self._sample_shown = text
        return [ev.Sample(step, text)]

    def _close_sample(self) -> list[ev.Event]:
        if self._sample is None:
            return []
        out = self._show_sample()
        self._sample, self._sample_shown = None, None
        return out


def _metric_event(record: dict[str, Any], max_iters: int) -> ev.Event | None:
    try:
        if record.get("type") == "train":
            return ev.Step(int(record["step"]), max_iters, float(record["elapsed"]), float(record["loss"]),
                           float(record["lr"]), float(record["tokens_per_sec"]), record.get("eta_seconds"),
                           record.get("memory") or {})
        if record.get("type") == "eval":
            return ev.Eval(int(record["step"]), float(record["elapsed"]), float(record["train_loss"]),
                           float(record["val_loss"]), float(record["val_bpb"]), bool(record.get("best")))
    except (KeyError, TypeError, ValueError):
        return None
    return None


class TrainProcess:
    """A training job on several processes, started as `python -m gptui train ... --nproc-per-node N` and
    followed through its files. `stop()` interrupts the launcher, which stops every rank at the same step;
    rank 0 saves the checkpoint."""

    def __init__(self, workspace: Workspace, request: TrainRequest, processes: int):
        self.workspace = workspace
        self.folder = Path(tempfile.mkdtemp(prefix="gptui-launch-"))
        self.launch = LaunchDir(self.folder)
        self.resume = request.resume
        self._log_offset = 0
        if request.resume:
            with contextlib.suppress(OSError):
                from gptui.core.runs import RunStore

                self._log_offset = RunStore(workspace).resolve(request.resume).file(LOG).stat().st_size
        argv = [sys.executable, "-m", "gptui", *worker_argv(workspace, request), "--nproc-per-node", str(processes)]
        env = {**os.environ, LAUNCH_DIR_VARIABLE: str(self.folder), "GPTUI_INTERRUPT_REASON": "stopped by user"}
        budget = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, budget // processes))  # the app's CPU budget, shared out
        self._stdout = open(self.folder / "stdout.txt", "wb")  # noqa: SIM115 (closed in close())
        self._stderr = open(self.folder / "stderr.txt", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr,
                                     env=env, cwd=workspace.home)
        self.failure: str | None = None

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Interrupt the launcher (as ctrl-c would): every rank stops at the same step and rank 0 saves."""
        if self.running:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGINT)

    def events(self, interval: float = POLL_SECONDS) -> Iterator[ev.Event]:
        """Events until the job ends: Started once rank 0 trains, then steps, evaluations, samples and log
        lines as its files grow, and Finished last."""
        follower: RunFollower | None = None
        started: ev.Started | None = None
        yield ev.Prepare("starting the processes", None)
        while True:
            done = self.proc.poll() is not None
            if follower is None and (info := self.launch.started()) is not None:
                started = _started_event(info)
                if started is not None:
                    yield started
                    follower = RunFollower(Run(Path(started.run_path)), started.max_iters, self._log_offset)
            if follower is not None:
                yield from follower.poll()
            if done:
                break
            time.sleep(interval)
        if follower is not None:
            yield from follower.flush()
        yield self._finished(started)

    def _finished(self, started: ev.Started | None) -> ev.Finished:
        code = self.proc.returncode
        summary = _last_json(self.folder / "stdout.txt")
        if code == 0 and summary is not None:
            return ev.Finished(str(summary.get("run", "")), str(summary.get("status", "completed")),
                               str(summary.get("reason", "")), int(summary.get("steps") or 0),
                               summary.get("best_val_loss"), summary.get("best_val_bpb"),
                               float(summary.get("seconds") or 0.0), float(summary.get("tokens_per_sec") or 0.0))
        self.failure = _error_line(self.folder / "stderr.txt") or f"the training processes exited with status {code}"
        run_id, state = "", {}
        run = Run(Path(started.run_path)) if started is not None else self.launch.run()
        if run is not None:
            run_id, state = run.id, run.read_state()
        return ev.Finished(run_id, "failed", self.failure, int(state.get("step") or 0), state.get("best_val_loss"),
                           state.get("best_val_bpb"), float(state.get("duration") or 0.0), 0.0)

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for f in (self._stdout, self._stderr):
            f.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _started_event(info: dict[str, Any]) -> ev.Started | None:
    try:
        return ev.Started(str(info["run_id"]), str(info["run_path"]), int(info["params"]), str(info["device"]),
                          str(info["dtype"]), int(info["start_step"]), int(info["max_iters"]),
                          dict(info.get("settings") or {}), int(info.get("world_size") or 1))
    except (KeyError, TypeError, ValueError):
        return None


def _last_json(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        data = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _error_line(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("gptui: error: "):
            return line[len("gptui: error: "):]
        if line.startswith("gptui: "):
            return line[len("gptui: "):]
    return None
