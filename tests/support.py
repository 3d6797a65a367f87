"""Helpers shared by the test suites that run the command line in a subprocess, as a user does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# one thread per process: on a busy 2-core machine, two OpenMP threads per process are many times slower
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("GPTUI_HOME", None)


def gptui(home: Path, *args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptui", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, env=ENV, cwd=home if home.is_dir() else home.parent, **kw,
    )


def gptui_background(home: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gptui", "--home", str(home), *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def took_a_step(line: str) -> bool:
    """The first progress line of `gptui train`: steps have been taken."""
    return line.startswith("step ") and "loss" in line


def interrupt_training(home: Path, args: list[str], ready: Callable[[str], bool], what: str, *,
                       timeout: float = 60, deadline: float | None = None) -> tuple[int, str, str]:
    """Run `gptui train ARGS` in the background as a user would, press ctrl-c (SIGINT) at the first stderr line
    that `ready` accepts, and return (exit status, stdout, the whole of stderr); fail if training ends before
    `what`, or (with `deadline`) if it does not come within that many seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "gptui", "--home", str(home), "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=home)
    seen = []
    try:
        start = time.monotonic()
        for line in proc.stderr:
            seen.append(line)
            if ready(line):
                break
            if deadline is not None:
                assert time.monotonic() - start < deadline, f"no {what} within {deadline:g} s"
        else:
            pytest.fail(f"training ended before {what}: {''.join(seen)}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, "".join(seen) + err


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got: {result.stderr!r}"
    line = lines[0]
    assert "error:" in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line
