"""``scientist discover``'s flow: generations as cached tasks (a resumed search continues with identical results)
and the statistically gated admission, on a tiny PPO."""

from __future__ import annotations

import json
import urllib.request

import pytest

from flows import cli
from flows.discovery import discover

pytestmark = pytest.mark.usefixtures("on_session_server")  # in-process flows: the session's Prefect server
TINY = {"total_timesteps": 2048, "num_envs": 4, "num_steps": 32, "num_minibatches": 2, "update_epochs": 2}
SEARCH = {"population": 4, "promote": 0, "tune": 2, "length": 32}


def _strip(state: dict) -> str:
    return json.dumps({**state, "log": [{k: v for k, v in e.items() if k != "seconds"} for e in state["log"]]},
                      sort_keys=True)


@pytest.mark.slow
def test_a_killed_search_resumes_with_identical_results_and_admission_gates(tmp_path, on_session_server):
    kwargs = {"runs_dir": str(tmp_path), "search": SEARCH, "ppo_overrides": TINY, "seeds": 2, "minutes": 30.0}
    first = discover(run_id="d1", generations=2, admit=False, **kwargs)
    assert first["generation"] == 2
    saved = (tmp_path / "d1" / "search" / "gen_0001.json").read_text()
    # re-running the run id: generations 0 and 1 are cache hits (their logged seconds are the first run's)
    resumed = discover(run_id="d1", generations=3, fresh_seeds=2, admit_top=1, held_out=["empty_random5"],
                       min_held_out=1, **kwargs)
    assert resumed["state"]["log"][:2] == first["state"]["log"]
    assert (tmp_path / "d1" / "search" / "gen_0001.json").read_text() == saved
    fresh = discover(run_id="d2", generations=3, admit=False, **kwargs)
    assert _strip(fresh["state"]) == _strip(resumed["state"])  # the same search as one that was never stopped
    admitted = resumed["admitted"]
    assert len(admitted) == 1
    tests = admitted[0]["admission"]["tests"]
    assert {(t["setting"], t["baseline"]) for t in tests} == {(s, b) for s in ("empty5", "empty_random5")
                                                             for b in ("ppo_clip", "dpo")}
    assert all(t["p_holm"] >= t["p"] for t in tests)
    assert set(admitted[0]["admission"]["iqm"]) == {"candidate", "ppo_clip", "dpo"}
    run = json.loads((tmp_path / "d1" / "run.json").read_text())
    assert run["status"] == "finished" and run["generation"] == 3
    # the baselines' constants got the search's own tuning budget before the gate: as many evosax steps as the
    # generations that tuned, as many members per step, the untuned formula kept if nothing beat it
    steps = sum(1 for e in resumed["state"]["log"] if e["tuned"])
    assert steps == 2
    tuning = json.loads((tmp_path / "d1" / "baseline_tuning.json").read_text())
    assert set(tuning) == {"ppo_clip", "dpo"} and run["baseline_tuning"]["dpo"]["generations"] == steps
    for name, t in tuning.items():
        assert t["evaluated"] == 1 + steps * SEARCH["tune"] and t["fitness"] >= t["start_fitness"], (name, t)
        assert len(t["constants"]) == len(t["start_constants"]) > 0
        assert (t["expr"] == t["start"]) is (t["constants"] == t["start_constants"])
    # the UI's progress of each search: generations done of those asked for, 100% at the end
    body = json.dumps({"artifacts": {"key": {"any_": ["discovery-progress"]}}}).encode()
    request = urllib.request.Request(f"{on_session_server}/artifacts/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        progress = json.loads(reply.read())
    assert len(progress) >= 3 and all(a["type"] == "progress" and a["data"] == 100.0 for a in progress), progress
    assert any("discovery generations: 3 of 3" in (a.get("description") or "") for a in progress), progress


def test_discover_refuses_other_templates(capsys):
    assert cli.main(["discover", "--template", "hades"]) == 2
    assert "lpo only" in capsys.readouterr().err


def test_discover_refuses_a_budget_without_a_model(capsys, monkeypatch):
    monkeypatch.delenv("SCIENTIST_MODEL", raising=False)
    assert cli.main(["discover", "--max-cost", "1"]) == 2
    assert "--max-cost needs a model" in capsys.readouterr().err


@pytest.mark.slow
def test_a_population_sharded_over_ray_actors_trains_like_one_compiled_call(tmp_path, monkeypatch):
    """``workers=2``: each generation's population is split into two shards trained at once by two Ray actors of a
    local Ray; the fitness of every member is the one the single in-process call gives (up to float summation
    order in the differently batched programs)."""
    import ray

    if ray.is_initialized():  # an earlier test's local Ray of one CPU: two actors need two
        ray.shutdown()
    monkeypatch.setenv("SCIENTIST_RAY_NUM_CPUS", "2")
    kwargs = {"runs_dir": str(tmp_path), "search": SEARCH, "ppo_overrides": TINY, "seeds": 2, "minutes": 30.0,
              "generations": 1, "admit": False}
    try:
        one = discover(run_id="one", **kwargs)
        sharded = discover(run_id="sharded", workers=2, **kwargs)
    finally:
        ray.shutdown()
    run = json.loads((tmp_path / "sharded" / "run.json").read_text())
    assert run["workers"] == 2
    rows = [(r["origin"], r["fitness"]) for r in sharded["state"]["archive"]]
    assert [o for o, _ in rows] == [r["origin"] for r in one["state"]["archive"]]
    assert [f for _, f in rows] == pytest.approx([r["fitness"] for r in one["state"]["archive"]], rel=1e-3, abs=1e-3)
