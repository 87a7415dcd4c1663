"""Test-wide settings: offline litellm, CPU JAX, a compilation cache shared by the whole suite."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
# one worker per local Ray: two test workers already fill the 2 cores, and a second Ray worker per run would import,
# trace and load every kernel again (the two-node cluster of test_ray_cluster.py has its own CPUs)
os.environ.setdefault("SCIENTIST_RAY_NUM_CPUS", "1")
# every compile into the shared cache, small ones too: the suite starts some hundred processes (runs, Ray workers,
# gate children) that each compile the same small programs (initialisers, probes, checks)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SCIENTIST_MODEL", "RAY_ADDRESS", "PREFECT_API_URL"):
    os.environ.pop(key, None)


import pytest


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """A module that starts Ray in this process (a flow run in-process) stops it, so the next module starts clean."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """The API URL of one real ``scientist server`` (Prefect, SQLite) per test worker, for the end-to-end runs that
    need no temporary server of their own (each temporary server costs a start and a fresh database per run).
    ``make run``'s own path, the temporary server, stays covered by lpo's killed run (test_template_runs.py), the
    CLI and fault tests and the two runs of test_ray_cluster.py."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect-session")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(home / "server.log", "w")  # noqa: SIM115 - held by the server process for the session
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            # "ready" is printed after the health check answered AND the new database was kept as the template
            # (tasks/runtime/prefect_db.py), which tests/tasks/test_prefect_db.py reads
            if "Prefect server ready" in (home / "server.log").read_text(errors="replace"):
                break
            time.sleep(0.5)
        with urllib.request.urlopen(f"{api}/health", timeout=5) as reply:
            assert reply.status == 200
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def on_session_server(prefect_api):
    """Flows called in this process (``meta_learning(...)``, ``discover(...)``) report to the session's server instead
    of starting a temporary one of their own (a server start and, on a fresh machine, a database migration each)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield prefect_api


# Work units of ``make test`` (``-n 2 --dist loadscope``, scheduled by ``UnitScheduling`` below): one per test file,
# so that a file's module fixtures are shared by its tests, except the files parametrized over the template registry,
# which give one unit per template (each template's smoke run is minutes long; one worker for all of them would be
# the suite's critical path), and the files whose fixtures are per test, which give one unit per test.
SPLIT_BY_TEMPLATE = {"tests/flows/test_template_runs.py", "tests/kernels/test_template_contract.py"}
SPLIT_BY_TEST = {"tests/llm/test_flow_llm.py"}
# The first unit, and the units of whole lpo runs at the smoke sizes, which start after the next-longest unit so that
# the first one has filled the compilation cache for them (two cold compiles of one kernel at once cost twice).
FIRST = "tests/flows/test_template_runs.py[lpo]"
LPO_RUNS = ("tests/infra/test_ray_cluster.py", "tests/infra/test_ui.py")
DURATIONS = ROOT / "tests" / "durations.json"  # seconds per work unit, measured cold (see the Makefile's test target)


def unit_of(nodeid: str) -> str:
    """The work unit of a test id: its file, ``file[template]`` or the test itself."""
    path = nodeid.split("::")[0]
    if path in SPLIT_BY_TEST:
        return nodeid
    if path in SPLIT_BY_TEMPLATE and nodeid.endswith("]") and "[" in nodeid:
        from jaxlib_kernels.templates import TEMPLATES

        names = [part for part in nodeid[nodeid.rindex("[") + 1:-1].split("-") if part in TEMPLATES]
        if names:
            return f"{path}[{names[0]}]"
    return path


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduler over our work units. (xdist's own ``loadgroup`` cannot be used: it regroups tests
    by rewriting ``item._nodeid``, which pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log) if config.getvalue("dist") in ("loadscope", "loadfile") else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Put the longest work units first (longest-processing-time-first), so the two workers finish together instead
    of one running a long end-to-end file alone at the end (run with ``--no-loadscope-reorder``, which keeps this
    order), except that lpo's smoke run goes first and the other lpo runs wait for it (``LPO_RUNS``). A unit's weight is its measured duration from ``tests/durations.json``; a unit not measured yet weighs
    15 s plus a minute per ``slow`` test."""
    import json

    measured = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    guess: dict[str, float] = {}
    for item in items:
        unit = unit_of(item.nodeid)
        guess[unit] = guess.get(unit, 15.0) + (60.0 if item.get_closest_marker("slow") else 0.0)
    weight = {unit: float(measured.get(unit, g)) for unit, g in guess.items()}
    order = sorted(weight, key=lambda unit: -weight[unit])
    if FIRST in weight:  # lpo's smoke run compiles the kernels the lpo-based runs use; they start once it has
        others = [u for u in order if u != FIRST and not u.startswith(LPO_RUNS)]
        early = others[:1]
        order = [FIRST, *early, *[u for u in order if u != FIRST and u not in early]]
    rank = {unit: i for i, unit in enumerate(order)}
    items.sort(key=lambda item: rank[unit_of(item.nodeid)])


_spent: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add up each work unit's duration (setup, call and teardown) for ``SCIENTIST_RECORD_DURATIONS``."""
    unit = unit_of(report.nodeid)
    _spent[unit] = _spent.get(unit, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    """With ``SCIENTIST_RECORD_DURATIONS=FILE``, merge the measured unit durations into FILE (JSON)."""
    import json

    target = os.environ.get("SCIENTIST_RECORD_DURATIONS")
    if target and not hasattr(session.config, "workerinput") and _spent:
        path = Path(target)
        known = json.loads(path.read_text()) if path.exists() else {}
        known.update({k: round(v, 1) for k, v in _spent.items()})
        path.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
