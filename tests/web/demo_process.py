"""`keysentry demo` as a process for the end-to-end tests (import as `web.demo_process`).

Starts the demo, reads its banner (the page's URL, the demo tenant's token, the simulators'
admin endpoint), keeps draining its output so it never blocks on a full pipe, and stops it with
a signal, returning the exit code.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 45.0
READY = "Stop with Ctrl-C."
_LINE = re.compile(r"^\s+(page|token|api|sim admin)\s+(\S+)(?:\s+\(Authorization: Bearer (\S+?);)?")


@dataclass
class DemoRun:
    process: subprocess.Popen[str]
    stderr: Path
    lines: list[str] = field(default_factory=list)
    page: str = ""
    token: str = ""
    admin_url: str = ""
    admin_token: str = ""

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def error_output(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def free_port_block(size: int = 24) -> int:
    """A port P such that P..P+size-1 are free now (the demo's page, simulators and admin endpoint)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            start = int(s.getsockname()[1])
        if start + size > 65000:
            continue
        if all(_free(p) for p in range(start, start + size)):
            return start
    raise RuntimeError("no block of free ports found")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_demo(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout_s: float = START_TIMEOUT_S
) -> DemoRun:
    stderr = cwd / "demo-stderr.txt"
    with stderr.open("w", encoding="utf-8") as err:  # a file: nothing blocks on a full pipe
        process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=err, text=True, env=dict(env), cwd=cwd
        )
    run = DemoRun(process, stderr)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(
                f"the demo exited with {process.wait()} before it was ready:\n{run.output}\n{run.error_output()}"
            )
        run.lines.append(line)
        if line.startswith("keys: keysentry sim"):  # the simulators' own banner: an older `keysentry demo`
            stop_demo(run, signal.SIGKILL)
            raise AssertionError(
                "`keysentry demo` started only the simulators: cli.py's demo command must call "
                "keysentry.demo.run_demo(port=...)"
            )
        found = _LINE.match(line)
        if found:
            kind, value, bearer = found.groups()
            if kind == "page":
                run.page = value.rstrip("/")
            elif kind == "token":
                run.token = value
            elif kind == "sim admin":
                run.admin_url, run.admin_token = value, bearer or ""
        if line.strip() == READY or line.rstrip().endswith(READY):
            threading.Thread(target=_keep_draining, args=(lines, run), daemon=True).start()
            return run
    stop_demo(run, signal.SIGKILL)
    raise AssertionError(
        f"the demo was not ready within {timeout_s:g} s:\n{run.output}\n{run.error_output()}"
    )


def _keep_draining(lines: queue.Queue[str | None], run: DemoRun) -> None:
    while (line := lines.get()) is not None:
        run.lines.append(line)


def stop_demo(run: DemoRun, sig: int = signal.SIGINT, timeout_s: float = 20.0) -> int:
    if run.process.poll() is None:
        run.process.send_signal(sig)
    try:
        code = run.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        run.process.kill()
        run.process.wait()
        raise AssertionError(
            f"the demo did not stop within {timeout_s:g} s after {signal.Signals(sig).name}"
        ) from None
    time.sleep(0.05)  # the drain thread reads the last lines
    return code


def environ(**extra: str) -> dict[str, str]:
    """This process's environment without KEYSENTRY_* settings (the demo replaces them anyway)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", **extra)
    return env
