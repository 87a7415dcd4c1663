"""The progress line of ``scientist run``, ``meta`` and ``discover`` (``tasks.runtime.artifacts.Progress``): one
self-overwriting line on a terminal, nothing when stderr is not one (a log file, CI, a Prefect worker)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ("from tasks.runtime.artifacts import Progress\n"
          "p = Progress(4, 'experiment units')\n"
          "for done in (1, 2, 4):\n"
          "    p.update(done)\n"
          "print('finished', flush=True)\n")


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            return out
        if not chunk:
            return out
        out += chunk


def test_on_a_terminal_the_progress_is_one_line_that_overwrites_itself():
    master, slave = pty.openpty()
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.append(_read_all(master)))  # read while the child writes
    reader.start()
    try:
        # no telemetry notice on the terminal (the CLI sets the same two: on a fresh Prefect home the child's temporary
        # server, and importing Prefect's client in a terminal, each printed one before the first progress line)
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)  # the child holds the only other end: its exit ends the reader (EIO)
        stdout, _ = proc.communicate()
        reader.join()
        shown = seen[0].decode()
    finally:
        os.close(master)
    assert proc.returncode == 0 and stdout.decode().strip() == "finished"
    # carriage return + erase line before every state, a newline only after the last one
    assert shown.count("\r\x1b[K") == 3, repr(shown)
    assert "experiment units: 1/4 (25%)" in shown and "experiment units: 2/4 (50%)" in shown
    assert shown.rstrip("\r\n").endswith("experiment units: 4/4 (100%)") and shown.count("\n") == 1, repr(shown)


def test_when_stderr_is_not_a_terminal_nothing_is_printed():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "finished"
    assert "experiment units" not in out.stderr and "\r" not in out.stderr, out.stderr
