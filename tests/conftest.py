"""Test-wide settings: offline litellm, CPU JAX, a compilation cache shared by the whole suite."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
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
    ``make run``'s own path, the temporary server, stays covered by the CLI, LLM and fault tests."""
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
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "server", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# Work units of ``make test`` (``-n 2 --dist loadgroup``): one per test file, so that a file's module fixtures are
# shared by its tests, except the files parametrized over the template registry, which give one unit per template
# (each template's smoke run is minutes long; one worker for all of them would be the suite's critical path).
SPLIT_BY_TEMPLATE = {"tests/flows/test_template_runs.py": "finished", "tests/kernels/test_template_contract.py": "name"}
SPLIT_BY_TEST = {"tests/llm/test_flow_llm.py"}  # function fixtures only: every test is a unit of its own
DURATIONS = ROOT / "tests" / "durations.json"  # seconds per work unit, measured cold (see the Makefile's test target)


def _unit(item) -> str:
    path = item.nodeid.split("::")[0]
    if path in SPLIT_BY_TEST:
        return item.nodeid.split("@")[0]
    param = SPLIT_BY_TEMPLATE.get(path)
    callspec = getattr(item, "callspec", None)
    if param and callspec is not None and param in callspec.params:
        return f"{path}[{callspec.params[param]}]"
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Group the tests into work units and put the longest units first (longest-processing-time-first), so the two
    workers finish together instead of one running a long end-to-end file alone at the end. A unit's weight is its
    measured duration from ``tests/durations.json``; a unit not measured yet weighs 15 s plus a minute per ``slow``
    test."""
    import json

    measured = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    guess: dict[str, float] = {}
    for item in items:
        unit = _unit(item)
        item.add_marker(pytest.mark.xdist_group(unit))
        guess[unit] = guess.get(unit, 15.0) + (60.0 if item.get_closest_marker("slow") else 0.0)
    weight = {unit: float(measured.get(unit, g)) for unit, g in guess.items()}
    items.sort(key=lambda item: -weight[_unit(item)])


_spent: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add up each work unit's duration (setup, call and teardown) for ``SCIENTIST_RECORD_DURATIONS``."""
    unit = report.nodeid.split("@")[0]
    path = unit.split("::")[0]
    if path in SPLIT_BY_TEST:
        path = unit
    elif path in SPLIT_BY_TEMPLATE and "[" in unit:
        params = unit.split("[", 1)[1].rstrip("]").split("-")
        from jaxlib_kernels.templates import TEMPLATES

        names = [p for p in params if p in TEMPLATES]
        path = f"{path}[{names[0]}]" if names else path
    _spent[path] = _spent.get(path, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    """With ``SCIENTIST_RECORD_DURATIONS=FILE``, merge the measured unit durations into FILE (JSON)."""
    import json

    target = os.environ.get("SCIENTIST_RECORD_DURATIONS")
    if target and not hasattr(session.config, "workerinput") and _spent:
        path = Path(target)
        known = json.loads(path.read_text()) if path.exists() else {}
        known.update({k: round(v, 1) for k, v in _spent.items()})
        path.write_text(json.dumps(dict(sorted(known.items())), indent=1) + "\n")
