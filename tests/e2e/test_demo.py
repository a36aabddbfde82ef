"""`keysentry demo` (what `make demo` runs) as a newcomer runs it: one command, a URL and a token.

The demo runs as its own process in a temporary directory (its store goes to ./.demo there);
the test reads the printed URL and token, signs in over HTTP like a browser, sees the demo
tenant's connections, and stops it with Ctrl-C (SIGINT), expecting exit code 0 and nothing
left listening.
"""

from __future__ import annotations

import http.cookiejar
import re
import signal
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from keysentry.sim.runner import DEMO_SCENARIO, key_lines
from keysentry.sim.scenario import load_scenario
from web.demo_process import environ, free_port_block, start_demo, stop_demo

pytestmark = pytest.mark.e2e

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_demo_serves_the_page_with_every_demo_key_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port_block()
    run = start_demo(
        [sys.executable, "-m", "keysentry", "demo", "--port", str(port)], env=environ(), cwd=tmp_path
    )
    try:
        assert run.page == f"http://127.0.0.1:{port}"
        assert run.token.startswith("ks_")
        assert run.admin_url.startswith("http://127.0.0.1:") and run.admin_token
        assert (tmp_path / ".demo" / "master.key").stat().st_mode & 0o077 == 0

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
        with opener.open(run.page + "/login", timeout=10) as r:
            csrf = CSRF.search(r.read().decode())
        assert csrf is not None
        form = urllib.parse.urlencode({"token": run.token, "csrf_token": csrf.group(1)}).encode()
        request = urllib.request.Request(run.page + "/login", data=form, headers={"Origin": run.page})
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(request, timeout=10)
        assert redirected.value.code == 303 and redirected.value.headers["Location"] == "/connections"
        with opener.open(run.page + "/connections", timeout=10) as r:
            page = r.read().decode()
        cards = re.findall(r'<article class="card sev-(\w+)" id="con_', page)
        assert len(cards) == len(key_lines(load_scenario(DEMO_SCENARIO)))
        assert {"ok", "warning", "error"} <= set(cards)
        assert "already_connected" in run.output and "temporary_issue" in run.output
    finally:
        code = stop_demo(run, signal.SIGINT)
    assert code == 0, run.error_output()
    assert "stopped" in run.output
    assert not listening(port) and not listening(port + 1)
    assert "Traceback" not in run.error_output()
