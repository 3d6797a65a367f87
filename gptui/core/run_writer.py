"""The run folder's writers: one listener on the trainer's events that keeps `metrics.jsonl`, `train.log` and
`state.json`, like the CLI's printer, the TUI and the trackers listen to the same events.

Every event but the data's progress becomes one record of `metrics.jsonl` (gptui.core.events' codec); a log line
also goes to `train.log` for people; a step refreshes state.json's heartbeat now and then, so other processes see
the run alive, a checkpoint brings state.json to its step and best losses, and the end of the run writes its final
status. A log line that cannot be written is let go (a log
must never end a run); any other write that fails is the run's failure, as it always was.
"""

from __future__ import annotations

import time

from gptui.core import events as ev
from gptui.core.runs import Run

STATE_SECONDS = 5.0  # heartbeat of state.json, so other processes can watch the run


class RunWriter:
    """Writes a run's events into its folder. `step` is where the run starts (a log line or a sample is recorded
    at the step the run has reached)."""

    def __init__(self, run: Run, step: int = 0):
        self.run = run
        self.step = step
        self._t_state = time.time()

    def __repr__(self) -> str:
        return f"run folder writer ({self.run.id})"

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Prepare):
            return  # many, and before the run folder exists
        if isinstance(event, ev.Log):
            self._log(event)
            return
        if isinstance(event, ev.Started):
            self.step = event.start_step
        elif isinstance(event, ev.Step | ev.Eval | ev.Sample | ev.Saved | ev.Finished):
            self.step = event.step
        if isinstance(event, ev.Finished) and event.status == "failed":
            self._failed(event)
            return
        self.run.append_metric(self._record(event))
        if isinstance(event, ev.Step) and time.time() - self._t_state >= STATE_SECONDS:
            self.run.write_state(step=event.step, duration=round(event.elapsed, 1), heartbeat=time.time())
            self._t_state = time.time()
        elif isinstance(event, ev.Saved):
            self.run.write_state(status=event.status, step=event.step, best_val_loss=event.best_val_loss,
                                 best_val_bpb=event.best_val_bpb, duration=round(event.elapsed, 1),
                                 heartbeat=time.time())
        elif isinstance(event, ev.Finished):
            self.run.write_state(status=event.status, pid=None, stop_reason=event.reason,
                                 tokens_per_sec=round(event.tokens_per_sec, 1))

    def _record(self, event: ev.Event) -> dict:
        """The event's record; what is new since metrics.jsonl held only steps and evaluations also says when it
        was written (a follower of a resumed run leaves out the lines and samples of the sessions before)."""
        record = ev.to_record(event, self.step)
        if record["type"] not in ev.LEGACY_TYPES:
            record["time"] = round(time.time(), 3)
        return record

    def _log(self, event: ev.Log) -> None:
        # recorded before it is logged: a follower that sees the line in train.log finds its record too
        for write in (lambda: self.run.append_metric(self._record(event)), lambda: self.run.log(event.line)):
            try:
                write()
            except OSError:
                pass

    def _failed(self, event: ev.Finished) -> None:
        """A failure is recorded as far as the disk allows: the error being reported is the one that matters."""
        try:
            self.run.write_state(status="failed", error=event.reason, pid=None)
            self.run.append_metric(self._record(event))
        except OSError:
            pass
