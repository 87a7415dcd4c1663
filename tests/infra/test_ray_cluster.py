"""Two smoke runs at once on a real Ray cluster of two nodes (a head and a second node, separate processes on
127.0.0.1): both complete, their units ran on both nodes, and neither disturbed the other."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import numpy as np
import pytest
from clusters import ROOT, SCIENTIST, SMALLEST, ledger

from tasks.experiments import load_unit


@pytest.mark.slow
def test_two_runs_at_once_on_a_two_node_cluster_use_both_nodes_and_do_not_interfere(ray_cluster, tmp_path):
    runs = tmp_path / "runs"
    procs = {
        run_id: subprocess.Popen([*SCIENTIST, "run", *SMALLEST, "--run-id", run_id, "--runs-dir", str(runs)],
                                 cwd=ROOT, env=ray_cluster, stdout=open(tmp_path / f"{run_id}.log", "w"),  # noqa: SIM115
                                 stderr=subprocess.STDOUT)
        for run_id in ("first", "second")
    }
    for run_id, proc in procs.items():
        assert proc.wait() == 0, (run_id, (tmp_path / f"{run_id}.log").read_text()[-4000:])

    keys = {}
    for run_id in procs:
        run_dir = runs / run_id
        run = json.loads((run_dir / "run.json").read_text())
        assert run["status"] == "completed" and run["ray_address"] == ray_cluster["RAY_ADDRESS"]
        assert run["papers"] and run["papers"][0]["pdf"]
        units = ledger(run_dir)
        # 3 baselines + 1 candidate on 2 settings, each computed once, all fine
        assert len(units) == 8 and len({u["key"] for u in units}) == 8, units
        assert all(u["status"] == "ok" for u in units)
        nodes = {u["node_id"] for u in units}
        assert len(nodes) == 2 and "" not in nodes, units
        keys[run_id] = {u["key"]: (u["method"], u["setting"]) for u in units}
        # each run kept its own temporary Prefect database (no SQLite file shared by the two)
        assert (run_dir / ".prefect" / "prefect.db").exists()

    # the baseline units are the same experiments in both runs: computed apart, they agree
    shared = set(keys["first"]) & set(keys["second"])
    assert len(shared) >= 6
    for key in shared:
        a = load_unit(runs / "first" / "units", {"key": key})
        b = load_unit(runs / "second" / "units", {"key": key})
        np.testing.assert_allclose(a["final"], b["final"], rtol=1e-5, atol=1e-6)
    # both runs are in the shared archive
    with sqlite3.connect(runs / "archive.sqlite") as db:
        archived = {row[0] for row in db.execute("SELECT DISTINCT run_id FROM candidates")}
    assert archived == {"first", "second"}
