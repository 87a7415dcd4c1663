"""Real infrastructure for the infra tests: a Ray cluster of two nodes and a Prefect server, both on 127.0.0.1.

Everything is started as separate processes in its own session with temp folders and free ports, and killed by
process id (with all its descendants) at the end, so no test touches Ray or Prefect processes it did not start.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCIENTIST = [sys.executable, "-m", "flows.cli"]
# the smallest whole-flow settings: 2 seeds, 4 PPO updates of 2048 steps per unit
SMALLEST = ["--profile", "smoke", "--seeds", "2", "--budget", "8192"]


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}  # the terminal flow run states


def api(server, path: str, body: dict | None = None):
    """GET (or POST ``body`` to) the Prefect REST API of ``server`` (a :class:`PrefectServer` or an API URL)."""
    data = None if body is None else json.dumps(body).encode()
    base = server if isinstance(server, str) else server.api
    req = urllib.request.Request(f"{base}{path}", data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read())


def prefect(server, *args, **kw) -> str:
    """Run the ``prefect`` CLI against ``server``; its stdout (asserting success)."""
    out = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=ROOT, env=server.env,
                         capture_output=True, text=True, check=False, **kw)
    assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_tree(proc: subprocess.Popen | psutil.Process | int) -> None:
    """Kill a process, its process group and every descendant (collected first, so none is orphaned unseen)."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    if isinstance(proc, subprocess.Popen):
        proc.wait()


def wait_for_line(path: Path, text: str, proc: subprocess.Popen) -> str:
    """Block until ``text`` appears in the log ``path`` of ``proc`` (failing if the process ends first)."""
    while True:
        out = path.read_text(errors="replace") if path.exists() else ""
        if text in out:
            return out
        assert proc.poll() is None, f"{proc.args} ended ({proc.returncode}):\n{out[-4000:]}"
        time.sleep(0.5)


def ledger(run_dir: Path) -> list[dict]:
    path = run_dir / "units" / "ledger.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RayNode:
    """One ``ray start --block`` process (a head or a worker node) on 127.0.0.1."""

    def __init__(self, tmp: Path, name: str, env: dict, head_port: int | None = None, temp_dir: Path | None = None):
        self.log = tmp / f"ray-{name}.log"
        self.temp_dir = temp_dir
        args = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--node-manager-port", str(free_port()),
                "--object-manager-port", str(free_port()), "--object-store-memory", str(128 << 20)]
        if head_port is None:
            self.port = free_port()
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--ray-client-server-port", str(free_port()), "--temp-dir", str(self.temp_dir)]
        else:
            args += ["--address", f"127.0.0.1:{head_port}"]
        # idle workers kept up to 4 per node, not Ray's default of one per CPU: two runs at once are two jobs, whose
        # workers are their own (each run's env), and with the default a node of one CPU killed the idle worker of
        # one run to start the other's, so nearly every unit started a fresh Python, imports and all (infra/ray/README.md)
        node_env = {**env, "RAY_num_workers_soft_limit": "4"}
        self.proc = subprocess.Popen(args, cwd=ROOT, env=node_env, stdout=open(self.log, "w"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_line(self.log, "Ray runtime started", self.proc)

    def stop(self) -> None:
        kill_tree(self.proc)


def ray_cluster_fixture(tmp_path_factory):
    """A head and a second node, 1 CPU each, as separate process trees; yields the env a driver needs."""
    tmp_path = tmp_path_factory.mktemp("ray-cluster")
    # token authentication with a token of this test only (Ray 2.60 turns it on by itself on a head that finds
    # ~/.ray/auth_token, so say which mode every process of the cluster uses)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Unix socket paths must stay under 108 bytes
    nodes = []
    try:
        nodes.append(RayNode(tmp_path, "head", env, temp_dir=short))
        env["RAY_ADDRESS"] = f"127.0.0.1:{nodes[0].port}"
        nodes.append(RayNode(tmp_path, "worker", env, head_port=nodes[0].port))
        yield env
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(short, ignore_errors=True)


class PrefectServer:
    """``scientist server`` (a real ``prefect server start``) on a free port, with its own PREFECT_HOME."""

    def __init__(self, tmp: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.home = tmp / "prefect-home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env.update({"PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                         "PREFECT_UI_ENABLED": "true", **(extra_env or {})})
        self.log = tmp / "prefect-server.log"
        self.proc = subprocess.Popen([*SCIENTIST, "server", "--port", str(self.port)], cwd=ROOT, env=self.env,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)
        self.banner = wait_for_line(self.log, "Ctrl-C stops it.", self.proc)
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env["PREFECT_API_URL"] = self.api

    def restart(self) -> None:
        """``scientist server`` again, on the same port and PREFECT_HOME (its database kept), with a log of its own."""
        self.log = self.log.with_name("prefect-server-again.log")
        self.proc = subprocess.Popen([*SCIENTIST, "server", "--port", str(self.port)], cwd=ROOT, env=self.env,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                     start_new_session=True)
        wait_for_line(self.log, "Ctrl-C stops it.", self.proc)

    def healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api}/health", timeout=10) as reply:
            return reply.status == 200 and json.loads(reply.read()) is True

    def stop(self) -> None:
        kill_tree(self.proc)


def prefect_server_fixture(tmp_path_factory):
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    try:
        yield server
    finally:
        server.stop()


class Postgres:
    """A throw-away PostgreSQL cluster (Debian's ``postgresql`` binaries) on 127.0.0.1 and a free port, trust
    authentication, superuser and database ``prefect``. As root it runs as the ``postgres`` user (initdb and the
    server refuse root); its data folder is a fresh /tmp folder that user owns, removed by :meth:`stop`."""

    def __init__(self):
        import glob
        import pwd

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql (make install)")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data, self.log = self.dir / "data", self.dir / "server.log"
        self._run("initdb", "-D", str(data), "-U", "prefect", "-A", "trust", "-E", "UTF8", "--no-instructions")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.log), "-w", "-t", "300", "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {self.dir}", "start")
        self.data = data
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "prefect", "prefect")
        self.url = f"postgresql+asyncpg://prefect@127.0.0.1:{self.port}/prefect"

    def _run(self, exe: str, *args: str) -> str:
        out = subprocess.run([*self.as_user, str(self.bin / exe), *args], cwd=self.dir, capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, (exe, out.stdout[-2000:], out.stderr[-2000:])
        return out.stdout

    def stop(self) -> None:
        if getattr(self, "data", None) is not None:
            subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                            "stop"], cwd=self.dir, capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_prefect_server_fixture(tmp_path_factory):
    """``scientist server`` on a throw-away Postgres."""
    pg = Postgres()
    server = None
    try:
        server = PrefectServer(tmp_path_factory.mktemp("prefect-pg"),
                               {"PREFECT_SERVER_DATABASE_CONNECTION_URL": pg.url})
        server.postgres = pg
        yield server
    finally:
        if server is not None:
            server.stop()
        pg.stop()
