"""prefect.yaml against a real Prefect server: deploy, a process worker, a deployment run, its task runs recorded.

The server is started with ``scientist server`` (a real ``prefect server start`` on SQLite in a temp
PREFECT_HOME, 127.0.0.1, a free port); the worker and every prefect command are separate processes.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest
import yaml
from clusters import BIN, ROOT, kill_tree

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api(server, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{server.api}{path}", data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read())


def prefect(server, *args, **kw):
    out = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=ROOT, env=server.env,
                         capture_output=True, text=True, **kw)
    assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout


def test_scientist_server_says_where_the_ui_and_api_are(prefect_server):
    banner = prefect_server.banner
    assert f"UI:  http://127.0.0.1:{prefect_server.port}" in banner
    assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_server.port}/api" in banner
    assert prefect_server.healthy()
    with urllib.request.urlopen(f"http://127.0.0.1:{prefect_server.port}/", timeout=30) as reply:
        assert reply.status == 200 and b"<html" in reply.read().lower()  # the UI is served


@pytest.mark.slow
def test_deploy_from_prefect_yaml_and_a_deployment_run_completes_on_a_process_worker(prefect_server, tmp_path):
    server = prefect_server
    server.env["SCIENTIST_HOME"] = str(ROOT)
    prefect(server, "work-pool", "create", "scientist-process", "--type", "process")
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    names = [d["name"] for d in declared if (ROOT / d["entrypoint"].split(":")[0]).exists()]
    prefect(server, "deploy", *[a for n in names for a in ("--name", n)])

    deployments = {f"{d['name']}": d for d in api(server, "/deployments/filter", {})}
    assert set(names) <= set(deployments) and {"lpo", "lpo-nightly-open-ended"} <= set(names)
    nightly = deployments["lpo-nightly-open-ended"]
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] and nightly["work_pool_name"] == "scientist-process"
    assert deployments["lpo"]["parameters"]["template"] == "lpo"

    runs = tmp_path / "runs"
    out = prefect(server, "deployment", "run", "ai-scientist/lpo", "--param", "profile=smoke", "--param", "seeds=2",
                  "--param", "budget=8192", "--param", "run_id=from-deployment", "--param", f"runs_dir={runs}")
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "scientist-process"], cwd=ROOT,
                              env=server.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while (run := api(server, f"/flow_runs/{flow_run_id}"))["state_type"] not in FINAL:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-4000:]
            time.sleep(2)
    finally:
        kill_tree(worker)
    assert run["state_type"] == "COMPLETED", (run["state"], (tmp_path / "worker.log").read_text()[-4000:])
    assert run["parameters"]["seeds"] == 2 and run["work_pool_name"] == "scientist-process"

    # the task runs of the flow run, with their logs and artifacts, are in this server
    task_runs = api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
    names_seen = {t["name"].rsplit("-", 1)[0] for t in task_runs}
    assert {"generate_ideas", "run_experiments", "aggregate_results"} <= names_seen, names_seen
    assert all(t["state_type"] == "COMPLETED" for t in task_runs), [(t["name"], t["state_type"]) for t in task_runs]
    logs = api(server, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    assert any("unit ppo_clip" in entry["message"] for entry in logs)  # per-unit lines of run_experiments
    artifacts = api(server, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    assert {"ideas", "run-summary"} <= {a["key"] for a in artifacts}

    run_json = json.loads((runs / "from-deployment" / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["prefect_api_url"] == server.api
