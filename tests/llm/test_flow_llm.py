"""The LLM backend's whole-run edges through litellm over HTTP: an unreachable server, a spent cost budget, a bad
budget flag, ``--no-fallback``, and a model that answers refusals and broken JSON (its paper holds none of it). The whole LLM-backed smoke run and the fallback run that ends in a paper are the
two runs of tests/infra/test_ray_cluster.py (two researchers on one two-node cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripted_server import (
    FAKE_KEY,
    IDEA,
    babbler,
    fenced,
    files_holding,
    researcher,
    run_env,
    stage_of,
)

ROOT = Path(__file__).resolve().parents[2]
SCIENTIST = [sys.executable, "-m", "flows.cli"]
SMALLEST = ["--profile", "smoke", "--seeds", "2", "--budget", "8192"]


def _env(**extra) -> dict:
    return run_env(None, **extra)


@pytest.mark.slow  # about 20 s on a busy 2-core machine: the command imports JAX before it probes
def test_unreachable_server_is_one_line_nonzero_and_recorded(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = tmp_path / "runs"
    env = _env(SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1")
    started = time.monotonic()
    out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--run-id", "down", "--runs-dir", str(runs)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the model server" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    run = json.loads((runs / "down" / "run.json").read_text())
    assert run["status"] == "failed" and "cannot reach the model server" in run["error"]
    assert FAKE_KEY not in out.stdout + out.stderr and files_holding(runs, FAKE_KEY) == []
    print(f"unreachable server: exit {out.returncode} after {elapsed:.1f} s")


@pytest.mark.slow
def test_max_cost_stops_the_run_cleanly_and_keeps_what_is_finished(tmp_path, serve, prefect_api):
    """A priced model (litellm knows gpt-4o-mini's price) whose first reply alone spends the budget."""

    def script(request):
        if stage_of(request).startswith("ideation"):
            return "Let me think at length. " + "x" * 40000 + "\n" + fenced(IDEA)  # about 10,000 completion tokens
        return researcher(request)

    server = serve(script)
    runs = tmp_path / "runs"
    env = _env(PREFECT_API_URL=prefect_api, SCIENTIST_MODEL="openai/gpt-4o-mini", OPENAI_API_BASE=server.url,
               SCIENTIST_IDEA_REFLECTIONS="0")
    out = subprocess.run([*SCIENTIST, "run", "--profile", "smoke", "--run-id", "budget", "--runs-dir", str(runs),
                          "--max-cost", "0.005"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "stopping: cost budget spent" in out.stdout + out.stderr and "stopped: budget exceeded" in out.stdout
    run = json.loads((runs / "budget" / "run.json").read_text())
    assert run["status"] == "stopped: budget exceeded" and run["error"].startswith("cost budget spent: $0.006")
    assert run["llm"]["budget"]["max_cost_usd"] == 0.005 and run["llm"]["total"]["cost_usd"] > 0.005
    assert list(run["llm"]["stages"]) == ["ideation"] and len(server.requests) == 1  # nothing sent after the stop
    [idea] = json.loads((runs / "budget" / "ideas.json").read_text())  # the finished stage is kept
    assert idea["Name"] == IDEA["Name"]
    assert (runs / "budget" / "summary.md").exists()


@pytest.mark.parametrize("args, message", [
    (["--max-cost", "-1", "--model", "openai/x"], "--max-cost must be positive"),
    (["--max-cost", "lots", "--model", "openai/x"], "--max-cost must be a number"),
    (["--max-cost", "1"], "--max-cost needs a model"),
])
def test_bad_budget_is_one_line_and_exit_2(tmp_path, args, message):
    out = subprocess.run([*SCIENTIST, "run", "--runs-dir", str(tmp_path), *args], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


@pytest.mark.slow
def test_without_the_fallback_a_model_that_keeps_answering_badly_fails_the_run_at_ideation(tmp_path, serve,
                                                                                           prefect_api):
    """``--no-fallback``: the hard failure for those who want one (the fallback's own run, which ends in a paper,
    is one of the two runs of tests/infra/test_ray_cluster.py)."""
    serve_ = serve(babbler)
    runs = tmp_path / "runs"
    env = _env(PREFECT_API_URL=prefect_api, SCIENTIST_MODEL="openai/test-model", OPENAI_API_BASE=serve_.url,
               SCIENTIST_IDEA_REFLECTIONS="0")
    strict = subprocess.run([*SCIENTIST, "run", *SMALLEST, "--runs-dir", str(runs), "--run-id", "strict",
                             "--no-fallback"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert strict.returncode == 1, strict.stdout[-3000:] + strict.stderr[-3000:]
    assert strict.stderr.strip().splitlines()[-1].startswith("scientist: error:"), strict.stderr[-2000:]
    failed = json.loads((runs / "strict" / "run.json").read_text())
    assert failed["status"] == "failed" and failed["fallback"] is False and "ideation" in failed["error"]
    assert not (runs / "strict" / "units").exists() or not list((runs / "strict" / "units").glob("*.npz"))
