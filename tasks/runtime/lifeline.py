"""Nothing outlives a killed run: a watcher process that ends the run's descendants when the run ends.

``scientist run`` (and ``meta``, ``server``) start many processes: Prefect's temporary server (uvicorn, holding a
port and the run's SQLite database), a local Ray (GCS, raylet, workers), the validation gate's sandbox children
(each in its own session). A run killed with SIGKILL runs no ``atexit`` hook and no ``finally``, so without help
they outlive it (Ray's own processes use PR_SET_PDEATHSIG; Prefect's server does not).

:func:`watch` starts ``python -m tasks.runtime.lifeline PID`` in its own session (so neither a Ctrl-C on the terminal nor
a kill of the run's process group reaches it). The watcher polls the run's process tree twice a second and
remembers every descendant it has seen (pid and start time, so a reused pid is never touched). When the run is
gone (exited or killed: a zombie counts as gone), it sends SIGTERM to the remembered processes still alive and
their descendants, SIGKILL to those left a few seconds later, and exits. A run that ends normally has stopped
its children already; the watcher then finds nothing to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 3.0


def watch(pid: int | None = None) -> subprocess.Popen | None:
    """Start the watcher of ``pid`` (default: this process); None where it cannot start (no psutil)."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    return subprocess.Popen([sys.executable, "-m", "tasks.runtime.lifeline", str(pid or os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env, close_fds=True)


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _family(procs) -> list:
    """The processes still alive (same pid and start time) and all their current descendants."""
    import psutil

    out = {}
    for p in procs:
        if not _alive(p):
            continue
        out[p.pid] = p
        try:
            for c in p.children(recursive=True):
                out.setdefault(c.pid, c)
        except psutil.Error:
            pass
    out.pop(os.getpid(), None)
    return list(out.values())


def reap(procs) -> None:
    """SIGTERM the living ``procs`` (and descendants), SIGKILL what is left after :data:`GRACE_S`."""
    import psutil

    family = _family(procs)
    for p in family:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(family, timeout=GRACE_S)
    for p in _family(left) + left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=GRACE_S)


def main(pid: int) -> int:
    import psutil

    me = os.getpid()
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    seen: dict[int, psutil.Process] = {}
    while _alive(root):
        try:
            for c in root.children(recursive=True):
                if c.pid != me and c.pid not in seen:
                    seen[c.pid] = c  # psutil.Process keeps the start time: is_running() is False for a reused pid
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    reap(list(seen.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
