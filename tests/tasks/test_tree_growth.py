"""The research tree of an lpo idea at tiny sizes (tasks/tree.py): every stage's nodes, the same tuning budget for
the candidate and every baseline, the view, and a tree killed during its improve stage that, grown again,
recomputes no finished node."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.base import TreeBudget
from jaxlib_kernels.tree import operators

ROOT = Path(__file__).resolve().parents[2]
EXPR = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], ["abs", "A"]]]
IDEA = {"Name": "magnitude_clip", "Title": "Magnitude-weighted clip", "expression": EXPR}
# the smoke profile's first training setting at 8,192 steps and 2 seeds: the program the smoke runs compile
BUDGET = TreeBudget(fraction=0.2, seeds=2, tune=4, improve_rounds=2, improve_width=3, ablate=2)


def _profile() -> dict:
    prof = make("lpo").profile("smoke")
    return dataclasses.asdict(dataclasses.replace(prof, baselines=("ppo_clip", "no_drift"), tree=BUDGET))


def _idea_dir(folder: Path) -> Path:
    """An idea folder as the code stage leaves it: the candidate and its attempts (a rejected draft, a repair)."""
    lpo = make("lpo")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "candidate.py").write_text(lpo.render(lpo, IDEA))
    attempts = [{"attempt": 1, "accepted": False, "reason": "static: name 'np' is not defined", "stage": "static"},
                {"attempt": 2, "accepted": True, "reason": "ok", "stage": "ok"}]
    (folder / "validation.json").write_text(json.dumps({"attempts": attempts, **attempts[-1]}))
    return folder


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    from tasks.tree import grow_tree, tune_baselines

    run = tmp_path_factory.mktemp("run")
    baselines = tune_baselines("lpo", _profile(), str(run / "tree"))
    idea_dir = _idea_dir(run / "ideas" / IDEA["Name"])
    out = grow_tree("lpo", IDEA, str(idea_dir), _profile(), baselines)
    return {"run": run, "baselines": baselines, "out": out, "idea_dir": idea_dir,
            "record": json.loads(Path(out["path"]).read_text())}


def test_the_tree_has_every_stage(grown):
    record, out = grown["record"], grown["out"]
    assert record["stages_done"] == ["implement", "tune", "improve", "ablate"]
    kinds = {(n["stage"], n["kind"]) for n in record["nodes"]}
    assert {("implement", "draft"), ("implement", "debug"), ("tune", "tune"), ("improve", "improve"),
            ("ablate", "ablate")} <= kinds
    draft, debug = (n for n in record["nodes"] if n["stage"] == "implement")
    assert draft["buggy"] and draft["why"].startswith("static:") and debug["parent"] == draft["id"]
    assert not debug["buggy"] and debug["why"] == "repairs: static: name 'np' is not defined"
    assert record["search"]["seeds"] == [1000, 1001] and record["search"]["budget"] == {"empty_random8": 8192}
    assert all(n["cost"] == 2 * 8192 for n in record["nodes"] if n["id"] != draft["id"])
    ids = [n["id"] for n in record["nodes"]]
    assert len(ids) == len(set(ids))
    by_id = {n["id"]: n for n in record["nodes"]}
    final = by_id[record["final"]["node"]]
    lpo = make("lpo")
    working = [n for n in record["nodes"] if n["stage"] in ("implement", "tune", "improve") and not n["buggy"]]
    assert final["score"] == max(n["score"] for n in working)  # final_return is maximised
    assert record["best"]["improve"] == final["id"]
    assert len(record["ablation"]) == BUDGET.ablate
    assert record["ablation"][0]["label"] == "with PPO clip's term A in place of |A|"
    for row in record["ablation"]:
        assert row["delta"] == pytest.approx(lpo.metric.improvement(by_id[row["node"]]["score"], final["score"]))
    assert out["nodes"] == {s: sum(n["stage"] == s for n in record["nodes"])
                            for s in ("implement", "tune", "improve", "ablate")}
    for name in ("tree.png", "tree.html"):
        assert (grown["idea_dir"] / "tree" / name).stat().st_size > 0
    assert final["id"] in (grown["idea_dir"] / "tree" / "tree.html").read_text()


def test_every_method_is_tuned_with_the_same_budget(grown):
    tuning = grown["record"]["tuning"]
    assert set(tuning) == {IDEA["Name"], "ppo_clip", "no_drift"}
    assert {t["evaluations"] for t in tuning.values()} == {BUDGET.tune}
    assert {t["cost"] for t in tuning.values()} == {BUDGET.tune * 2 * 8192}
    assert tuning[IDEA["Name"]]["role"] == "candidate"
    lpo = make("lpo")
    for name, t in grown["baselines"].items():
        assert t["role"] == "baseline"
        assert t["before"]["constants"] == operators.constants(lpo, lpo.baseline(name).source)
        assert t["score_after"] >= t["score_before"]  # the untuned baseline is one of the tuned one's candidates
    saved = json.loads((grown["run"] / "tree" / "baselines.json").read_text())
    assert saved["tuning"] == json.loads(json.dumps(grown["baselines"]))


_CHILD = """
import json, sys
from tasks.tree import grow_tree
args = json.loads(sys.argv[1])
grow_tree("lpo", args["idea"], args["idea_dir"], args["profile"], None)
"""


def test_a_tree_killed_during_improve_recomputes_no_finished_node(grown, tmp_path):
    from tasks.tree import grow_tree

    idea_dir = _idea_dir(tmp_path / "idea")
    path = idea_dir / "tree" / "tree.json"
    args = json.dumps({"idea": IDEA, "idea_dir": str(idea_dir), "profile": _profile()})
    child = subprocess.Popen([sys.executable, "-c", _CHILD, args], cwd=ROOT, env=os.environ.copy(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    before = None
    try:
        while child.poll() is None:
            if path.exists():
                data = json.loads(path.read_text())
                if any(n["stage"] == "improve" for n in data["nodes"]):
                    child.send_signal(signal.SIGKILL)
                    before = data
                    break
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert before is not None, child.stderr.read().decode()[-2000:]
    assert "ablate" not in before["stages_done"]  # killed before the tree was done
    before = json.loads(path.read_text())  # what the killed run left (a later write may have landed)
    out = grow_tree("lpo", IDEA, str(idea_dir), _profile(), None)
    after = json.loads(path.read_text())
    old = {n["id"]: n for n in before["nodes"]}
    new = [n for n in after["nodes"] if n["id"] not in old]
    ids = [n["id"] for n in after["nodes"]]
    assert len(ids) == len(set(ids))
    assert [n for n in after["nodes"] if n["id"] in old] == list(old.values())  # finished nodes kept as they were
    assert {n["computed_in"] for n in old.values()} == {1} and {n["computed_in"] for n in new} == {2}
    assert out["evaluated"] == len(new) > 0  # the rerun evaluated exactly the missing nodes
    assert after["stages_done"] == ["implement", "tune", "improve", "ablate"]
    assert after["final"]["node"] in {n["id"] for n in after["nodes"]}
