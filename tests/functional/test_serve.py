"""`gptui serve` in a real browser: the server starts on 127.0.0.1, headless Chromium (Debian's `chromium`, driven by
Playwright's Python package, never a downloaded browser) opens the page, and the TUI's Corpus tab with the sample
corpus appears in the page's terminal; ctrl-c then stops the server and the app it started for the page.

xterm.js draws the terminal on a canvas, so the screen's text is read from the terminal's own buffer: a script
that runs before the page's catches the xterm `Terminal` textual-serve creates (it is kept as `.terminal` on the
page's client object) and the test reads its rows through xterm's public buffer API. A screenshot is kept in the
test's temporary folder for a person to look at."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ENV

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# runs before the page's scripts: the first object that gets a `terminal` holding an xterm Terminal hands it over
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && value.buffer.active) window.__gptuiTerminal = value;
  },
});
"""
READ_SCREEN = """() => {
  const term = window.__gptuiTerminal;
  if (!term) return null;
  const buffer = term.buffer.active, rows = [];
  for (let i = 0; i < term.rows; i++) {
    const line = buffer.getLine(buffer.viewportY + i);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\\n");
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, server: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gptui serve exited with {server.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"gptui serve did not listen on port {port} within {seconds:.0f} s")


@pytest.fixture
def server(tmp_path):
    """`gptui --home <empty folder> serve` on a free port: (url, workspace). Its process group is ended after."""
    home = tmp_path / "workspace"
    home.mkdir()
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gptui", "--home", str(home), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV, cwd=tmp_path,
            start_new_session=True,  # the server and the app processes it starts, ended together below
        )
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}/", home, proc
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.mark.skipif(CHROMIUM is None, reason="needs the Debian chromium package (apt-get install chromium)")
def test_the_corpus_tab_with_the_sample_corpus_appears_in_a_browser(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    url, home, proc = server
    screen, shot = "", tmp_path / "serve.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.add_init_script(CATCH_TERMINAL)
            page.goto(url, wait_until="domcontentloaded", timeout=20_000)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                screen = page.evaluate(READ_SCREEN) or ""
                if "Preview of tinyshakespeare.txt" in screen:
                    break
                page.wait_for_timeout(200)
            page.screenshot(path=str(shot))
            # ctrl-c with the page still open: the server ends its app and stops (textual-serve alone left open
            # pages to aiohttp's one-minute grace period)
            proc.send_signal(signal.SIGINT)
            stopped = proc.wait(30)
        finally:
            browser.close()
    assert stopped == 0
    left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    assert left.strip() == "", f"processes of the server left running:\n{left}"
    assert "Preview of tinyshakespeare.txt" in screen, f"the Corpus tab did not appear (see {shot}):\n{screen}"
    lines = screen.splitlines()
    assert "Corpus" in lines[0] and "Runs" in lines[0], "the tab bar"
    (row,) = [line for line in lines if line.split()[:1] == ["tinyshakespeare"]]
    assert row.split()[1:4] == ["text", "1.1", "MB"], "the sample corpus in the Corpus tab's table: kind and size"
    assert "First Citizen:" in screen, "the preview of the sample"
    assert (home / "inputs" / "tinyshakespeare.txt").is_file(), "served over the --home workspace"
