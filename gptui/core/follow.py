"""Watching a training job that runs in other processes, through the files its rank 0 writes.

`TrainProcess` starts `python -m gptui train ... --nproc-per-node N` (the launcher, which starts torchrun) as a
child process; `RunFollower` turns the new records of the run's `metrics.jsonl` back into the events a
`TrainJob` in this process sends, so the Train tab shows both alike. The launch folder (see
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


class RunFollower:
    """Reads what a run folder gained since the last look and turns it into trainer events: the records of its
    `metrics.jsonl`, through gptui.core.events' codec, so a followed run shows what a job in this process shows.

    A resumed run's file still holds the sessions before: their steps and evaluations are shown (the curves go
    on), their log lines and samples, written before `since` (seconds since the epoch), are not. A folder written
    before log lines were records (`LegacyLogReader`) is read the old way."""

    def __init__(self, run: Run, max_iters: int, log_offset: int = 0, since: float = 0.0):
        self.run = run
        self.max_iters = max_iters
        self.since = since
        self._offset = 0
        self._legacy: LegacyLogReader | None = None
        self._typed = False  # a record other than a step or an evaluation was seen: the folder is of today
        self._log_offset = log_offset

    def poll(self) -> list[ev.Event]:
        # train.log is looked at before the records: the writer records a line before it logs it, so a log line
        # seen with no record of one is a folder written before lines were recorded
        logged = self._legacy is None and not self._typed and _size(self.run.file(LOG)) > self._log_offset
        out: list[ev.Event] = []
        lines, self._offset = _new_lines(self.run.file(METRICS), self._offset)
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("type") not in ev.LEGACY_TYPES:
                self._typed = True
            event = self._event(record)
            if event is not None:
                out.append(event)
        if self._legacy is None and not self._typed and logged:
            self._legacy = LegacyLogReader(self.run, self._log_offset)
        if self._legacy is not None:
            out += self._legacy.poll()
        return out

    def flush(self) -> list[ev.Event]:
        return self.poll() + (self._legacy.close_sample() if self._legacy is not None else [])

    def _event(self, record: Any) -> ev.Event | None:
        event = ev.from_record(record, {"max_iters": self.max_iters})
        if isinstance(event, ev.Step | ev.Eval):
            return event
        if isinstance(event, ev.Log | ev.Sample) and _number(record.get("time")) >= self.since:
            return event
        return None  # the start and the end are the launcher's to say (TrainProcess)


class LegacyLogReader:
    """Log lines and samples of a run folder written before they were records of metrics.jsonl: read from
    train.log's text, whose wording this matches (kept for those folders only; today's are read as records)."""

    STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}  ?")
    SAMPLE = re.compile(r"^sample at step (\d+):$")
    # lines the trainer wrote on its own; one of them ends a sample's text
    TRAINER_LINE = re.compile(r"^(step +\d+ +train |sample at step \d+:$|finished: |failed: |resum|torch\.compile|"
                              r"data order changed|distributed: )")

    def __init__(self, run: Run, log_offset: int = 0):
        self.run = run
        self._offset = log_offset
        self._sample: tuple[int, list[str]] | None = None
        self._sample_shown: str | None = None

    def poll(self) -> list[ev.Event]:
        out: list[ev.Event] = []
        lines, self._offset = _new_lines(self.run.file(LOG), self._offset)
        for line in lines:
            text = self.STAMP.sub("", line)
            out.append(ev.Log(text))
            if self._sample is not None and self.TRAINER_LINE.match(text):
                out += self.close_sample()
            if (match := self.SAMPLE.match(text)) is not None:
                self._sample = (int(match.group(1)), [])
            elif self._sample is not None:
                self._sample[1].append(text)
        if self._sample is not None:  # shown as far as it got; updated if more of it arrives
            out += self._show_sample()
        return out

    def _show_sample(self) -> list[ev.Event]:
        step, lines = self._sample  # type: ignore[misc]
        text = "\n".join(lines).rstrip("\n")
        if not text or text == self._sample_shown:
            return []
        self._sample_shown = text
        return [ev.Sample(step, text)]

    def close_sample(self) -> list[ev.Event]:
        if self._sample is None:
            return []
        out = self._show_sample()
        self._sample, self._sample_shown = None, None
        return out


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The complete lines appended to a file past `offset` (a torn last line waits), and the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return data[:end].decode("utf-8", errors="replace").split("\n"), offset + end + 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


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
        self._since = time.time() if request.resume else 0.0  # a resumed run's earlier lines and samples are not shown
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
                    follower = RunFollower(Run(Path(started.run_path)), started.max_iters, self._log_offset,
                                               self._since)
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
