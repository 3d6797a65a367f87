"""Starting one training job on several processes with torchrun, and what those processes tell their launcher.

`gptui train --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P | --rdzv-endpoint
H:P]` checks the request, then runs torchrun's own launcher (`torch.distributed.run`, the code behind
`python -m torch.distributed.run`) inside this process. It starts N copies of `python -m gptui train ...` per
machine, which find each other through RANK, WORLD_SIZE and LOCAL_RANK (see gptui.core.distributed). Calling
torchrun as a function rather than as a program lets the launcher turn its outcomes (a rank that died, a
rendezvous that timed out, a port in use) into one line and an exit status, and record a failure in the run.

Each process's life is here too: `worker_argv` is the one command line of a training process (torchrun starts it
on every rank; the Train tab starts it with `--nproc-per-node N` to launch them), `train_rank` is what one rank
does, and `run_job` turns ctrl-c and SIGTERM into a clean stop, on one process or many.

The launch folder (`$GPTUI_LAUNCH_DIR`) carries what the processes tell their launcher: rank 0 writes
`started.json` (the run it trains) when training starts; a rank that fails writes `error-<rank>.json` with its
one-line reason. The TUI uses the same folder to find the run it follows.

This module does not import torch until a launch starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from gptui.core import events as ev
from gptui.core.claim import claim_run
from gptui.core.errors import DamagedRun, GptuiError, InputError
from gptui.core.fsio import atomic_write_json, read_json
from gptui.core.request import TrainPlan, TrainRequest
from gptui.core.runs import CHECKPOINT, Run, RunStore, check_files
from gptui.core.workspace import Workspace

if TYPE_CHECKING:
    from gptui.core.trainer import TrainJob

LAUNCH_DIR_VARIABLE = "GPTUI_LAUNCH_DIR"
DEFAULT_RDZV_TIMEOUT = 300.0  # seconds a machine waits for the others to join before giving up
SHUTDOWN_TIMEOUT = 120  # seconds a stopped rank has to save its checkpoint before torchrun kills it
RDZV_ID = "gptui"


class LaunchFailed(GptuiError):
    pass


@dataclass(frozen=True)
class LaunchOptions:
    """torchrun's settings for one machine's share of the job."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_timeout: float = DEFAULT_RDZV_TIMEOUT

    def check(self) -> LaunchOptions:
        """Refuse impossible combinations with one line each (InputError, exit 2)."""
        if self.nproc_per_node < 1:
            raise InputError(f"--nproc-per-node must be at least 1, not {self.nproc_per_node}")
        if self.nproc_per_node > 1024:
            raise InputError(f"--nproc-per-node {self.nproc_per_node} is more processes than one machine runs")
        if self.nnodes < 1:
            raise InputError(f"--nnodes must be at least 1, not {self.nnodes}")
        if not (math.isfinite(self.rdzv_timeout) and self.rdzv_timeout > 0):
            raise InputError(f"--rdzv-timeout must be a positive number of seconds, not {self.rdzv_timeout:g}")
        static = self.master_addr is not None or self.master_port is not None
        if static and self.rdzv_endpoint:
            raise InputError("give either --master-addr/--master-port or --rdzv-endpoint, not both")
        if self.rdzv_endpoint:
            parse_endpoint(self.rdzv_endpoint)
            if self.node_rank:
                raise InputError("--node-rank goes with --master-addr/--master-port; with --rdzv-endpoint "
                                 "the machines are numbered as they join")
        else:
            if not 0 <= self.node_rank < self.nnodes:
                raise InputError(f"--node-rank must be between 0 and {self.nnodes - 1} for --nnodes {self.nnodes}, "
                                 f"not {self.node_rank}")
            if self.nnodes > 1 and (self.master_addr is None or self.master_port is None):
                raise InputError(f"a job on {self.nnodes} machines needs --master-addr and --master-port "
                                 "(the address of the machine with --node-rank 0), or --rdzv-endpoint HOST:PORT")
            if self.master_port is not None and not 1 <= self.master_port <= 65535:
                raise InputError(f"--master-port must be between 1 and 65535, not {self.master_port}")
            if self.master_addr is not None and not self.master_addr.strip():
                raise InputError("--master-addr needs a host name or address")
        return self

    def torchrun_args(self) -> list[str]:
        """torchrun's own command-line options for these settings (everything before `-m gptui`)."""
        timeout = max(1, round(self.rdzv_timeout))
        args = ["--nproc-per-node", str(self.nproc_per_node), "--nnodes", str(self.nnodes),
                "--max-restarts", "0", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT),
                "--rdzv-conf", f"timeout={timeout},join_timeout={timeout},read_timeout={timeout}"]
        if self.rdzv_endpoint:
            args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint, "--rdzv-id", RDZV_ID]
        elif self.master_port is not None or self.nnodes > 1:
            args += ["--node-rank", str(self.node_rank), "--master-addr", self.master_addr or "127.0.0.1",
                     "--master-port", str(self.master_port)]
        # else: one machine, no port given: torchrun hosts its rendezvous on a free port of its own
        return args

    def rendezvous(self) -> str:
        if self.rdzv_endpoint:
            return self.rdzv_endpoint
        if self.master_port is not None:
            return f"{self.master_addr or '127.0.0.1'}:{self.master_port}"
        return "this machine"


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.strip().rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"--rdzv-endpoint must be HOST:PORT (a port from 1 to 65535), not {endpoint!r}")
    return host.strip("[]"), int(port)


def port_in_use(port: int) -> bool:
    """Whether a TCP port of this machine is taken (the rendezvous store listens on every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the launch folder -------------------------------------------------------------------------------------


class LaunchDir:
    """What the processes of one launch leave for their launcher (and the TUI)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def from_env(cls) -> LaunchDir | None:
        value = os.environ.get(LAUNCH_DIR_VARIABLE)
        return cls(value) if value else None

    def write_started(self, started: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            atomic_write_json(self.path / "started.json", started)

    def started(self) -> dict[str, Any] | None:
        try:
            data = read_json(self.path / "started.json")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def run(self) -> Run | None:
        """The run rank 0 trains: named when training started, or when rank 0 failed after creating it."""
        for record in (self.started(), self.errors().get(0)):
            if record and record.get("run_path"):
                return Run(Path(record["run_path"]))
        return None

    def write_error(self, rank: int, message: str, exit_code: int, peer: bool, run_path: str | None = None) -> None:
        with contextlib.suppress(OSError):
            atomic_write_json(self.path / f"error-{rank}.json",
                              {"rank": rank, "message": message, "exit_code": exit_code, "peer": peer,
                               "time": time.time(), "run_path": run_path})

    def errors(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(self.path.glob("error-*.json")):
            try:
                data = read_json(path)
                out[int(data["rank"])] = data
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out


# --- running torchrun ----------------------------------------------------------------------------------------


@dataclass
class Death:
    """A rank that ended without reporting a reason of its own (killed by a signal, or an exit status)."""

    rank: int
    exitcode: int
    signal: str | None
    timestamp: float


def launch(options: LaunchOptions, worker_args: list[str], device: str, *, debug: bool = False) -> int:
    """Run this machine's share of the job under torchrun; return the exit status (0 also after a clean stop).

    `worker_args` are gptui's own arguments for each process (`--home H train ...`)."""
    saved_env = dict(os.environ)
    if not debug:  # torchrun's own chatter (warnings, retries, its traceback) stays out of the one-line contract;
        # torch reads these when it loads, so they are set first
        os.environ.setdefault("LOGLEVEL", "CRITICAL")
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    own_dir = os.environ.get(LAUNCH_DIR_VARIABLE) is None
    folder = None
    try:
        check_machine(options, device)
        folder = Path(tempfile.mkdtemp(prefix="gptui-launch-")) if own_dir else Path(os.environ[LAUNCH_DIR_VARIABLE])
        os.environ[LAUNCH_DIR_VARIABLE] = str(folder)
        if "OMP_NUM_THREADS" not in os.environ:  # share the cores out rather than oversubscribe them
            os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // options.nproc_per_node))
        return _run_torchrun(options, worker_args, LaunchDir(folder), debug)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if own_dir and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def check_machine(options: LaunchOptions, device: str) -> None:
    """Refuse what this machine cannot do before starting anything: more CUDA ranks than GPUs, a port in use."""
    import torch

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but no CUDA GPU is available (use device=auto or cpu)")
    if cuda:
        gpus = torch.cuda.device_count()
        if options.nproc_per_node > gpus:
            raise InputError(f"--nproc-per-node {options.nproc_per_node} asks for one GPU per process but this "
                             f"machine has {gpus}; use at most {gpus}, or device=cpu")
    if not options.rdzv_endpoint and options.master_port is not None and options.node_rank == 0:
        if port_in_use(options.master_port):
            raise InputError(f"port {options.master_port} is in use on this machine; pick another --master-port")


def _quiet_torchrun_loggers() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _run_torchrun(options: LaunchOptions, worker_args: list[str], folder: LaunchDir, debug: bool) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if not debug:
        _quiet_torchrun_loggers()
    argv = [*options.torchrun_args(), "-m", "gptui", *worker_args]
    deaths: dict[int, Death] = {}
    interrupted = False
    try:
        torchrun.run(torchrun.parse_args(argv))
    except SignalException:
        interrupted = True
    except ChildFailedError as exc:
        for rank, failure in exc.failures.items():
            sig = failure.signal_name() if failure.exitcode < 0 else None
            deaths[rank] = Death(rank, failure.exitcode, sig, float(failure.timestamp))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        if debug:
            raise
        raise _rendezvous_failure(exc, options) from None
    return read_outcome(folder, deaths, interrupted)


def _rendezvous_failure(exc: Exception, options: LaunchOptions) -> GptuiError:
    from torch.distributed import DistError
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    text, where = str(exc), options.rendezvous()
    if "EADDRINUSE" in text or "address already in use" in text.lower():
        return InputError(f"the rendezvous port ({where}) is in use on this machine; pick another port")
    if isinstance(exc, (RendezvousError, DistError, TimeoutError, OSError)):
        return LaunchFailed(f"could not form the job at {where} within {options.rdzv_timeout:g}s "
                            f"({type(exc).__name__}); are the other machines started and reachable?")
    first = text.strip().splitlines()
    return LaunchFailed(f"torchrun could not start the job: {type(exc).__name__}: {first[0] if first else ''}")


def read_outcome(folder: LaunchDir, deaths: dict[int, Death], interrupted: bool) -> int:
    """Turn what the ranks reported into an exit status, one line on stderr, and the run's failed state."""
    run = folder.run()
    errors = folder.errors()
    if not deaths and not errors:
        if not interrupted:
            return 0
        state = run.read_state() if run else {}
        if state.get("status") in ("stopped", "completed"):
            return 0  # the ranks stopped together and rank 0 saved (and printed the summary)
        if run is None:
            print("gptui: interrupted", file=sys.stderr)
            return 130
        reason, code = "interrupted before the ranks could save", 1
    else:
        reason, code = root_cause(deaths, errors)
    if run is not None:
        reason += _record_failure(run, reason)
    print(f"gptui: error: {reason}", file=sys.stderr)
    return code


def root_cause(deaths: dict[int, Death], errors: dict[int, dict[str, Any]]) -> tuple[str, int]:
    """The failure that brought the job down, as (one line, exit status).

    A rank's own reason comes first (a bad input, out of memory); then a rank that died without one (killed,
    crashed), preferring a death by any signal over the SIGTERM torchrun sends the survivors; last, a rank that
    only saw another one go."""
    own = sorted((e for e in errors.values() if not e.get("peer")), key=lambda e: (e.get("time", 0), e["rank"]))
    if own:
        first = own[0]
        named = first["rank"] == 0 or str(first["message"]).startswith(f"rank {first['rank']} ")
        prefix = "" if named else f"rank {first['rank']}: "
        return prefix + str(first["message"]), int(first.get("exit_code", 1))
    silent = [d for r, d in deaths.items() if r not in errors and d.exitcode != 0]
    if silent:
        first = min(silent, key=lambda d: (d.exitcode == -signal.SIGTERM, d.timestamp, d.rank))
        how = f"was killed ({first.signal})" if first.signal else f"exited with status {first.exitcode}"
        return f"rank {first.rank} {how}", 1
    peers = sorted(errors.values(), key=lambda e: (e.get("time", 0), e["rank"]))
    if peers:
        return str(peers[0]["message"]), int(peers[0].get("exit_code", 1))
    return "training failed", 1


def _record_failure(run: Run, reason: str) -> str:
    """Mark the run failed with the root cause (its last checkpoint stays); return what to add to the line."""
    state = run.read_state()
    status = state.get("status")
    if status in ("stopped", "completed"):
        return ""
    with contextlib.suppress(OSError):
        if status != "failed" or state.get("error") != reason:
            run.write_state(status="failed", error=reason, pid=None)
            run.log(f"failed: {reason}")
    if run.file(CHECKPOINT).exists():
        return f"; run {run.id} is marked failed and resumes from its last checkpoint (--resume {run.id})"
    return f"; run {run.id} is marked failed"


# --- a training process's life --------------------------------------------------------------------------------


def worker_argv(workspace: Workspace, request: TrainRequest, *, debug: bool = False) -> list[str]:
    """gptui's own arguments for a process that trains `request` (`--home H train ...`): what torchrun starts on
    each rank, and (with `--nproc-per-node N` added) what the Train tab starts to launch them."""
    r = request
    argv = ["--home", str(workspace.home)] + (["--debug"] if debug else []) + ["train"]
    for flag, value in (("--input", r.corpus), ("--preset", r.preset), ("--name", r.name), ("--resume", r.resume),
                        ("--init-from", r.init_from)):
        if value is not None:
            argv += [flag, value]
    for item in r.sets:
        argv += ["--set", item]
    if r.max_minutes is not None:
        argv += ["--max-minutes", repr(r.max_minutes)]
    if r.replace_errors:
        argv.append("--replace-errors")
    if r.skip_bad_rows:
        argv.append("--skip-bad-rows")
    if r.workers:
        argv += ["--workers", str(r.workers)]
    return argv


def check_launch(workspace: Workspace, request: TrainRequest) -> None:
    """Refuse here, in one line, what every rank would refuse after torchrun started them: a resumed run that
    trains elsewhere, is damaged or has no checkpoint; a corpus that is not there."""
    workspace.ensure()
    if request.resume:
        run = RunStore(workspace).resolve(request.resume)
        with claim_run(run.path, run.id):  # refused here in one line when it trains; rank 0 claims it to keep
            problem = check_files(run, rebuildable=False)
        if problem:
            raise DamagedRun(f"run {run.id} is damaged: {problem}")
        if not run.file(CHECKPOINT).exists():
            raise InputError(f"run {run.id} has no checkpoint to resume from")
    else:
        workspace.corpus_path(request.corpus or "")


class Progress(Protocol):
    """What shows a job's progress: called with each event; `message` prints a line; `close` at the end."""

    def __call__(self, event: ev.Event) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


class Silent:
    """The progress of a rank other than 0: nothing to show."""

    def __call__(self, event: ev.Event) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def run_job(job: TrainJob, progress: Progress) -> ev.Finished:
    """Run a TrainJob with ctrl-c and SIGTERM turned into a clean stop (a second ctrl-c aborts)."""
    interrupt = os.environ.get("GPTUI_INTERRUPT_REASON") or "interrupted (ctrl-c)"

    def on_sigint(signum, frame):
        if job.stopping:
            raise KeyboardInterrupt
        progress.message("stopping: evaluating and saving (ctrl-c again to abort)")
        job.stop(interrupt)

    previous = signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, lambda s, f: job.stop("terminated (SIGTERM)"))
    try:
        return job.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()


def print_summary(result: ev.Finished) -> None:
    """The job's last line on stdout, one JSON object (the Train tab reads it back from its launcher)."""
    print(json.dumps({"run": result.run_id, "status": result.status, "reason": result.reason,
                      "steps": result.step, "best_val_loss": result.best_val_loss,
                      "best_val_bpb": result.best_val_bpb, "seconds": round(result.duration, 1),
                      "tokens_per_sec": round(result.tokens_per_sec)}))


def train_rank(workspace: Workspace, plan: TrainPlan, progress: Callable[[], Progress], *,
               debug: bool = False) -> NoReturn:
    """One process of a torchrun job: rank 0 shows `progress()` and prints the summary like a single-process
    run; the others stay silent. A failure is one line (under `gptui train --nproc-per-node`, the launcher
    prints it for the whole job).

    The process ends with os._exit once its files and output are flushed: torch's gloo backend can abort
    (SIGABRT, "terminate called without an active exception") in the interpreter's own teardown, which would
    turn a finished rank into a failed one."""
    code = _rank_job(workspace, plan, progress, debug)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _rank_job(workspace: Workspace, plan: TrainPlan, progress: Callable[[], Progress], debug: bool) -> int:
    from gptui.core.distributed import PeerFailed, PeerLost, from_env, rank_prefix, torchrun_rank

    folder = LaunchDir.from_env()
    rank = torchrun_rank()
    dist = job = None
    try:
        dist = from_env(plan.device(workspace))
        shown = progress() if dist.is_main else Silent()

        def on_event(e: ev.Event) -> None:
            shown(e)
            if folder is not None and dist.is_main and isinstance(e, ev.Started):
                folder.write_started(dataclasses.asdict(e))

        job = plan.job(workspace, on_event=on_event, dist=dist)
        result = run_job(job, shown)
    except (Exception, KeyboardInterrupt) as exc:
        if debug:
            raise
        if isinstance(exc, GptuiError):
            message, code = str(exc), exc.exit_code
        elif isinstance(exc, KeyboardInterrupt):
            message, code = "interrupted", 130
        else:
            first = str(exc).strip().splitlines()
            message, code = f"{type(exc).__name__}: {first[0] if first else ''}", 1
        peer = isinstance(exc, (PeerFailed, PeerLost))
        if folder is not None:
            run = job.owned_run if job is not None and rank == 0 else None
            folder.write_error(rank, message, code, peer, str(run.path) if run is not None else None)
        elif not isinstance(exc, PeerFailed):
            print(f"gptui: error: {rank_prefix()}{message}", file=sys.stderr)
        return code
    dist.close()
    if dist.is_main:
        print_summary(result)
    return 0
