"""Prefect on a real PostgreSQL: ``scientist server`` on a throw-away cluster (tests/infra/clusters.py: Debian's
``postgresql`` binaries, 127.0.0.1, a free port), then a flow run from ``scientist run`` and a deployment run on a
process worker (``prefect.yaml``), both recorded in that database.

Both runs are the cheapest whole flow that still exercises the server: lpo, smoke profile, ``--approve ideas`` with
a 2-second approval timeout, so each proposes, checks novelty, pauses (a Paused state with a run-input form in
Postgres), times out and completes cleanly. The full experiments path is covered on SQLite by
test_ui.py (a deployment run on a process worker, approved in the browser, to a paper).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from clusters import BIN, FINAL, ROOT, SCIENTIST, api, kill_tree, prefect

pytestmark = pytest.mark.slow
APPROVAL = ["--approve", "ideas", "--approval-timeout", "2"]


@pytest.fixture(scope="module")
def on_postgres(postgres_prefect_server, tmp_path_factory):
    server = postgres_prefect_server
    tmp = tmp_path_factory.mktemp("pg-runs")
    runs = tmp / "runs"
    server.env["SCIENTIST_HOME"] = str(ROOT)
    prefect(server, "work-pool", "create", "scientist-process", "--type", "process")
    prefect(server, "deploy", "--name", "lpo")
    out = prefect(server, "deployment", "run", "ai-scientist/lpo", "--param", "profile=smoke", "--param",
                  "approve=ideas", "--param", "approval_timeout=2", "--param", "run_id=deployed", "--param",
                  f"runs_dir={runs}")
    deployed_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    with open(tmp / "worker.log", "w") as log:
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "scientist-process"], cwd=ROOT,
                                  env=server.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        cli = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", *APPROVAL, "--run-id", "direct", "--runs-dir",
                              str(runs)], cwd=ROOT, env=server.env, capture_output=True, text=True, check=False)
        while (deployed := api(server, f"/flow_runs/{deployed_id}"))["state_type"] not in FINAL:
            assert worker.poll() is None, (tmp / "worker.log").read_text()[-4000:]
            time.sleep(2)
    finally:
        kill_tree(worker)
    return {"server": server, "runs": runs, "cli": cli, "deployed": deployed, "worker_log": tmp / "worker.log"}


def test_scientist_server_runs_on_postgres(on_postgres):
    server = on_postgres["server"]
    assert "database: postgresql+asyncpg://prefect@127.0.0.1:" in server.banner and server.healthy()
    out = subprocess.run([*server.postgres.as_user, str(server.postgres.bin / "psql"), "-h", "127.0.0.1", "-p",
                          str(server.postgres.port), "-U", "prefect", "-At", "-c",
                          "SELECT count(*) FROM flow_run", "prefect"], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) >= 2  # both runs are rows of this Postgres


def test_a_flow_run_from_the_cli_is_recorded_in_postgres(on_postgres):
    server, cli = on_postgres["server"], on_postgres["cli"]
    assert cli.returncode == 1 and "stopped: approval timed out" in cli.stdout, cli.stdout[-3000:] + cli.stderr[-3000:]
    [flow_run] = [r for r in api(server, "/flow_runs/filter", {}) if r["parameters"].get("run_id") == "direct"]
    assert flow_run["state_type"] == "COMPLETED" and flow_run["deployment_id"] is None
    tasks = api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run["id"]]}}})
    assert {t["name"].rsplit("-", 1)[0] for t in tasks} >= {"generate_ideas", "check_novelty"}
    states = api(server, f"/flow_run_states/?flow_run_id={flow_run['id']}")
    assert "PAUSED" in {s["type"] for s in states}
    artifacts = {a["key"] for a in api(server, "/artifacts/filter",
                                       {"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})}
    assert {"ideas", "run-summary"} <= artifacts
    run = json.loads((on_postgres["runs"] / "direct" / "run.json").read_text())
    assert run["status"] == "stopped: approval timed out" and run["approval"]["status"] == "timed out"
    ideas = json.loads((on_postgres["runs"] / "direct" / "ideas.json").read_text())
    assert ideas and {i["status"] for i in ideas} == {"novel"}  # proposed, checked, kept; nothing trained
    assert not (on_postgres["runs"] / "direct" / "units" / "ledger.jsonl").exists()


def test_a_deployment_run_on_a_process_worker_is_recorded_in_postgres(on_postgres):
    deployed = on_postgres["deployed"]
    assert deployed["state_type"] == "COMPLETED", on_postgres["worker_log"].read_text()[-4000:]
    assert deployed["work_pool_name"] == "scientist-process" and deployed["deployment_id"]
    run = json.loads((on_postgres["runs"] / "deployed" / "run.json").read_text())
    assert run["status"] == "stopped: approval timed out" and run["prefect_api_url"] == on_postgres["server"].api
