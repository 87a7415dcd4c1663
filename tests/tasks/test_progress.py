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


def test_reports_skip_a_lost_prefect_server_and_resume_when_it_answers_again(monkeypatch):
    """``best_effort`` reports: a server that refuses connections is taken as lost at once (reports skipped,
    Prefect's client retries off, so its own calls fail fast); a ``/health`` that answers again brings both back."""
    import http.server
    import socket

    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from tasks.runtime import artifacts

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    watch = artifacts.ServerWatch()
    monkeypatch.setattr(artifacts, "SERVER", watch)
    calls: list[int] = []
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        retries = get_current_settings().client.max_retries
        try:
            assert artifacts.best_effort(calls.append, 1) is None and calls == []
            assert watch.lost and get_current_settings().client.max_retries == 0
            assert not watch.reachable()  # backing off: no new probe yet, still lost

            class Health(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(200 if self.path == "/api/health" else 404)
                    self.end_headers()
                    self.wfile.write(b"true")

                def log_message(self, *args):
                    pass

            server = http.server.HTTPServer(("127.0.0.1", port), Health)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                assert watch.reachable(force=True) and not watch.lost
                assert get_current_settings().client.max_retries == retries
                assert artifacts.best_effort(calls.append, 2) is None and calls == [2]
            finally:
                server.shutdown()
                server.server_close()
        finally:
            if watch.lost:  # the settings' retries back as they were
                watch._up()
