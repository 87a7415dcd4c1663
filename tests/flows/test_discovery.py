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


def test_discover_refuses_templates_without_a_formula_plug_in(capsys):
    assert cli.main(["discover", "--template", "hades"]) == 2
    assert "serves templates whose plug-in is an elementwise formula (lpo, dpo, marl)" in capsys.readouterr().err
    assert cli.main(["discover", "--template", "marl", "--setting", "empty5"]) == 2
    assert "not a marl setting" in capsys.readouterr().err
    assert cli.main(["discover", "--template", "dpo", "--model", "openai/gpt-4o-mini"]) == 2
    assert "searches preference trees offline" in capsys.readouterr().err


@pytest.mark.slow
def test_the_engine_serves_marl_with_ippo_fitness_and_the_same_admission(tmp_path):
    """``template="marl"``: the population trains with IPPO on MPE simple_spread (the template's declared training
    setting), and the admission gates the best formula against the tuned PPO clip and DPO on fresh seeds. Sized so
    that the generations (the first holds the four baselines, the second mutations and tuned members), the
    baselines' tuning and the admission share one compiled program (4 programs x 2 seeds at 2,048 steps)."""
    import numpy as np

    from jaxlib_kernels import interpreter
    from jaxlib_kernels.templates import make

    out = discover(template="marl", run_id="m1", runs_dir=str(tmp_path), generations=2, seeds=2, fresh_seeds=2,
                   search={"population": 4, "promote": 0, "tune": 2, "length": 32},
                   ppo_overrides={"total_timesteps": 2048}, admit_top=1, held_out=[], min_held_out=0, minutes=30.0)
    run = json.loads((tmp_path / "m1" / "run.json").read_text())
    assert run["template"] == "marl" and run["setting"] == "spread" and run["status"] == "finished"
    rows = {r["origin"]: r["fitness"] for r in out["state"]["archive"]}
    assert {"ppo_clip", "dpo"} <= set(rows)
    # the search's fitness is IPPO's per-agent return on spread for search seeds 0 and 1 (a random policy: about -28)
    template = make("marl")
    config = template.kernel_config(template.setting("spread"), 2048)
    clip = template.baselines["ppo_clip"].expression
    direct = template.discovery.train_programs(config, interpreter.encode_population([clip] * 4, 32), [0, 1])
    assert rows["ppo_clip"] == pytest.approx(float(np.mean(direct[0])), abs=1e-4)
    assert all(-60.0 < f < 0.0 for f in rows.values()), rows
    (admitted,) = out["admitted"]
    assert {(t["setting"], t["baseline"]) for t in admitted["admission"]["tests"]} == {("spread", "ppo_clip"),
                                                                                      ("spread", "dpo")}
    assert admitted["fresh_seeds"] == 2 and admitted["settings"] == ["spread"]


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


def test_confirmed_discoveries_become_ideas_with_their_admission_and_selection_bias():
    """What the paper run of ``discover(paper=True)`` is given: each discovery as an idea of the template's JSON shape
    whose text reports its fresh-seed admission and how much the search's selection inflated its fitness."""
    from flows.discovery import discovery_ideas
    from jaxlib_kernels import symbolic
    from jaxlib_kernels.templates import make

    template = make("lpo")
    expr = ["add", 0.0183, ["mul", 0.102, ["mul", ["abs", "A"], ["sq", "omr"]]]]
    found = {"expr": expr, "origin": "dpo+perturb+evosax", "fitness": 0.74, "settings": ["empty5", "empty6"],
             "fresh_seeds": 16, "beats_all_on": ["empty5", "empty6"],
             "admission": {"tests": [{"setting": s, "baseline": b, "mean": m, "baseline_mean": m - 0.05,
                                      "p_holm": 0.01} for s, m in (("empty5", 0.71), ("empty6", 0.5))
                                     for b in ("ppo_clip", "dpo")],
                           "iqm": {"candidate": {"iqm": 0.7}, "ppo_clip": {"iqm": 0.6}, "dpo": {"iqm": 0.62}}}}
    ideas = discovery_ideas(template, template.profile("default"), [found, found], "disc-1")
    assert [i["Name"] for i in ideas] == [ideas[0]["Name"], ideas[0]["Name"] + "_2"]
    idea = ideas[0]
    assert idea["Name"].startswith("discovered_") and idea["Name"] not in template.baselines
    assert idea["expression"] == expr and idea["kind"] == "source"
    assert template.render(template, idea) == symbolic.render_source(expr, "drift", doc=idea["Title"])
    assert idea["discovery"]["selection_bias"] == pytest.approx(0.74 - 0.71)
    assert "16 fresh seeds" in idea["Experiment"] and "+0.030" in idea["Experiment"]
    assert json.loads(json.dumps(ideas)) == ideas  # travels as JSON between stages


@pytest.mark.slow
def test_the_engine_serves_dpo_with_preference_losses_as_programs(tmp_path):
    """``template="dpo"``: the search's trees are preference losses in z = beta * rho (the interpreter's preference
    language, dpo's own mutations, gate and behaviour), trained as one population of the tiny LM's DPO training,
    and gated against DPO and DiscoPOP's LRML on fresh seeds."""
    import numpy as np

    from jaxlib_kernels import interpreter
    from jaxlib_kernels.templates import make

    out = discover(template="dpo", run_id="p1", runs_dir=str(tmp_path), generations=2, seeds=2, fresh_seeds=2,
                   budget=16, search={"population": 3, "promote": 0, "tune": 2, "length": 32}, admit_top=1,
                   held_out=[], min_held_out=0, minutes=30.0)
    run = json.loads((tmp_path / "p1" / "run.json").read_text())
    assert run["setting"] == "unigram" and run["search"]["language"] == "preference"
    archive = out["state"]["archive"]
    assert len(archive) >= 4 and all("z" in json.dumps(r["expr"]) for r in archive)
    assert any(r["generation"] == 1 and "+" in r["origin"] for r in archive)  # the second generation mutated
    rows = {r["origin"]: r["fitness"] for r in archive}
    template = make("dpo")
    direct = template.discovery.train_programs(
        template.kernel_config(template.setting("unigram"), 16),
        interpreter.encode_population([template.baselines["dpo"].expression] * 3, 32, "preference"), [0, 1])
    assert rows["dpo"] == pytest.approx(float(np.mean(direct[0])), abs=1e-4)
    (admitted,) = out["admitted"]
    assert {t["baseline"] for t in admitted["admission"]["tests"]} == {"dpo", "lrml"}
    assert admitted["formula"].count("z") >= 1  # LaTeX in the template's variable
