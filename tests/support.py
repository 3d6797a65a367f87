"""Helpers shared by the test suites that run the command line in a subprocess, as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
