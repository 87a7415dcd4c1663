"""A run whose Prefect server goes away during its experiments neither hangs nor crawls, and resumes once it is back.

``scientist run --template lpo --profile smoke --ideas 2`` (the smallest sizes) reports to a real ``scientist
server``; the server is killed when the run's ledger shows two finished units. Reporting to the UI is best effort
(``tasks.runtime.artifacts.SERVER``), so the units after the loss finish at the pace of those before it, as the
run's own records show (each unit's finish time in the ledger, less its compute time in its ``.json``: the time the
driver spent around it), and the run ends with its papers or with the one line that says the server was lost. The
server is then started again on the same port and the same run id re-run: it ends in papers, and the ledger shows
no unit computed twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from clusters import ROOT, SCIENTIST, SMALLEST, PrefectServer, kill_tree, ledger, wait_for_line

from flows.cli import SERVER_LOST
from tasks.runtime.artifacts import REPORT_TIMEOUT_S

HANG_GUARD_S = 1800  # only against a hang: the subprocess is killed after this, the test then fails


def finished_units(run_dir: Path) -> list[dict]:
    return [e for e in ledger(run_dir) if e["status"] == "ok"]


def driver_seconds(run_dir: Path, entries: list[dict], previous: float) -> list[float]:
    """For each unit in ``entries`` (ledger order): the wall time since the previous unit finished, less the
    unit's own compute time (``seconds`` in its .json): what the run's driver spent around it."""
    out = []
    for e in entries:
        compute = json.loads((run_dir / "units" / f"{e['key']}.json").read_text())["seconds"]
        out.append(e["time"] - previous - compute)
        previous = e["time"]
    return out


def restart(server: PrefectServer) -> None:
    """``scientist server`` again, on the same port and PREFECT_HOME (its database kept), with a log of its own."""
    server.log = server.log.with_name("prefect-server-again.log")
    server.proc = subprocess.Popen([*SCIENTIST, "server", "--port", str(server.port)], cwd=ROOT, env=server.env,
                                   stdout=open(server.log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                   start_new_session=True)
    wait_for_line(server.log, "Ctrl-C stops it.", server.proc)


@pytest.mark.slow
def test_a_run_outlives_its_prefect_server_and_resumes_when_it_is_back(tmp_path):
    server = PrefectServer(tmp_path)
    runs, run_id = tmp_path / "runs", "server-lost"
    run_dir = runs / run_id
    args = [*SCIENTIST, "run", "--template", "lpo", *SMALLEST, "--ideas", "2", "--run-id", run_id,
            "--runs-dir", str(runs)]
    log = tmp_path / "run.log"
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=server.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            while len(finished_units(run_dir)) < 2:
                assert proc.poll() is None, log.read_text()[-4000:]
                time.sleep(0.2)
            server.stop()
            lost_at = time.time()
            rc = proc.wait(HANG_GUARD_S)
        finally:
            kill_tree(proc)
        text = log.read_text(errors="replace")
        units = finished_units(run_dir)
        before = [e for e in units if e["time"] <= lost_at]
        after = [e for e in units if e["time"] > lost_at]
        assert len(before) >= 2, text[-4000:]
        if rc == SERVER_LOST:  # stopped: with the one line
            lines = [x for x in text.splitlines() if "was lost during run" in x]
            assert len(lines) == 1 and f"--run-id {run_id}" in lines[0] and str(run_dir) in lines[0], text[-4000:]
        else:
            assert rc == 0, text[-4000:]
        if after:  # units finished after the loss: at the pace of those before it
            first = driver_seconds(run_dir, before, before[0]["time"])[1:]
            then = driver_seconds(run_dir, after, before[-1]["time"])
            # a crawl is a minute of retries per unit; at most one report waits its timeout before the loss is seen
            assert max(then) <= 2 * max(*first, 1.0) + 2 * REPORT_TIMEOUT_S, (first, then)
        run = json.loads((run_dir / "run.json").read_text())
        assert run["prefect_server_lost"]["url"] == server.api

        restart(server)
        assert server.healthy()
        again = subprocess.run([*args], cwd=ROOT, env=server.env, capture_output=True, text=True, check=False,
                               timeout=HANG_GUARD_S)
        assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
        run = json.loads((run_dir / "run.json").read_text())
        assert run["status"] == "completed" and run["resumed"] is True and run["papers"]
        assert all(Path(p["pdf"]).exists() for p in run["papers"])
        keys = [e["key"] for e in finished_units(run_dir)]
        assert len(keys) == len(set(keys))  # no finished unit computed again
    finally:
        server.stop()
