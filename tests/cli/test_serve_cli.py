"""`gptui serve`'s bad input, checked before the server starts: one line, exit 2. (The page itself, in a
browser, is tests/functional/test_serve.py.)"""

from __future__ import annotations

import socket

import pytest
from support import assert_one_line_error, gptui

from gptui.cli import _public_url


def test_a_busy_port_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gptui(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port), timeout=60)
    assert_one_line_error(result, 2, f"port {port} on 127.0.0.1 is busy", "--port")
    assert result.stdout == ""


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_a_port_out_of_range_is_one_line_and_exit_2(tmp_path, port):
    assert_one_line_error(gptui(tmp_path, "serve", "--port", port, timeout=60), 2, "--port must be between 1 and 65535")


def test_an_address_of_another_machine_is_one_line_and_exit_2(tmp_path):
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine; binding to it sends nothing
    result = gptui(tmp_path, "serve", "--host", "192.0.2.1", "--port", "8000", timeout=60)
    assert_one_line_error(result, 2, "192.0.2.1 is not an address of this machine")


def test_a_port_that_is_not_a_number_is_one_line_and_exit_2(tmp_path):
    assert_one_line_error(gptui(tmp_path, "serve", "--port", "http", timeout=60), 2, "--port")


def test_the_page_connects_back_to_an_address_a_browser_can_reach():
    assert _public_url("127.0.0.1", 8000, None) == "http://127.0.0.1:8000"
    assert _public_url("::1", 8080, None) == "http://[::1]:8080"
    # all interfaces: no browser can connect to 0.0.0.0, so the page names this machine instead
    assert _public_url("0.0.0.0", 8000, None) == f"http://{socket.gethostname()}:8000"
    assert _public_url("0.0.0.0", 8000, "https://gpt.example.org/") == "https://gpt.example.org"
