"""The research tree's pure parts (jaxlib_kernels/tree): candidate operators on every registered template's
baselines, the record, node ids, the best node by the metric's direction, and the stages over an evaluation
callable that computes a known function of the candidate's constants (no training)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxlib_kernels.optimisers.space import Continuous
from jaxlib_kernels.templates import TEMPLATES, make
from jaxlib_kernels.templates.base import Metric
from jaxlib_kernels.tree import TREE_SEED0, operators, profile_of, search_plan, stages
from jaxlib_kernels.tree.record import Node, TreeRecord, node_id

SEARCH = {"settings": ["a", "b"], "seeds": [1000, 1001], "budget": {"a": 10, "b": 20}}


def _baselines(template) -> dict[str, str]:
    return {n: b.source for n, b in template.baselines.items()}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_operators_on_every_baseline(name):
    template = make(name)
    texts = _baselines(template)
    for method, text in texts.items():
        values = operators.constants(template, text)
        assert operators.constants(template, operators.with_constants(template, text, values)) == values, method
        doubled = [2 * v for v in values]
        changed = operators.with_constants(template, text, doubled)
        template.static_check(changed)
        assert operators.constants(template, changed) == pytest.approx(doubled), method
        found = operators.variants(template, text, 3, seed=1, tried={text})
        assert len({t for _, t in found}) == len(found)
        for label, variant in found:
            assert label and variant != text
            template.static_check(variant)
        assert found == operators.variants(template, text, 3, seed=1, tried={text})  # the same seed, the same
        for label, ablated in operators.ablations(template, text, texts):
            assert label and ablated != text
            template.static_check(ablated)
        if values:
            assert found, f"{method} has constants, so it has variants"


@pytest.mark.parametrize("name", [n for n in TEMPLATES if make(n).discovery is not None])
def test_formula_candidates_are_trees(name):
    """An idea rendered by the template's formula language is recognised as its tree; its ablations include the
    nearest baseline's term where they differ by one subtree."""
    template = make(name)
    language = template.discovery.language
    base = next(b.expression for b in template.baselines.values()
                if b.expression is not None and isinstance(b.expression, list) and language.valid(b.expression))
    expr = ["mul", 0.5, base]
    text = language.render(template, {"expression": expr, "Title": "A test idea."})
    assert operators.expression_of(template, text) == expr
    assert operators.constants(template, text)[0] == 0.5
    new = operators.with_constants(template, text, [0.25, *operators.constants(template, text)[1:]])
    assert operators.expression_of(template, new)[1] == 0.25
    labels = [label for label, _ in operators.ablations(template, text, _baselines(template))]
    assert "without the factor 0.5" in labels
    assert operators.expression_of(template, "def f(x):\n    return x\n") is None


def test_nearest_baseline_term_comes_first():
    lpo = make("lpo")
    expr = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], ["abs", "A"]]]
    text = lpo.render(lpo, {"expression": expr, "Title": "Magnitude-weighted clip."})
    label, ablated = operators.ablations(lpo, text, _baselines(lpo))[0]
    assert label == "with PPO clip's term A in place of |A|"
    assert operators.expression_of(lpo, ablated) == lpo.baselines["ppo_clip"].expression


def test_record_round_trip_and_ids(tmp_path):
    a = node_id("tune", "tune", "m", "text", {"lr": 0.1, "epochs": 2}, SEARCH)
    assert a == node_id("tune", "tune", "m", "text", {"epochs": 2, "lr": 0.1}, json.loads(json.dumps(SEARCH)))
    assert a == "nc457a2430cdd9712"  # stable across processes and versions: resumption looks nodes up by it
    assert a != node_id("improve", "improve", "m", "text", {"lr": 0.1, "epochs": 2}, SEARCH)
    assert a != node_id("tune", "tune", "m", "text", {"lr": 0.1, "epochs": 2}, {**SEARCH, "seeds": [0, 1]})
    record = TreeRecord.open(tmp_path / "tree" / "tree.json", {"idea": "x", "search": SEARCH})
    node = Node(a, None, "tune", "tune", "m", "candidate", "text", {"lr": 0.1}, "l", {"a": [0.5, None]}, None, True,
                "a non-finite metric", 60, round=None, computed_in=record.growth)
    record.add(node)
    record.save()
    again = TreeRecord.open(record.path, {"idea": "x", "search": SEARCH})
    assert again.get(a) == node and again.growth == 2 and len(again.nodes) == 1
    assert TreeRecord.load(record.path).data["nodes"][0]["metric"] == {"a": [0.5, None]}


def _node(nid, score, buggy=False):
    return Node(nid, None, "tune", "tune", "m", "candidate", nid, score=score, buggy=buggy)


def test_best_follows_the_metric_direction():
    nodes = [_node("a", 0.1), _node("b", 0.5), _node("c", 0.3), _node("d", None, buggy=True), _node("e", 9.0, True)]
    assert stages.best(Metric("m", "", maximize=True), nodes).id == "b"
    assert stages.best(Metric("m", "", maximize=False), nodes).id == "a"
    assert stages.best(Metric("m", "", maximize=True), nodes[3:]) is None
    calls = []
    assert stages.best(Metric("m", "", maximize=False), nodes, lambda tied: calls.append(tied) or "c").id == "a"
    assert not calls  # no exact tie: a model is not asked
    tied = [_node("a", 0.2), _node("b", 0.2), _node("c", 0.1)]
    chosen = stages.best(Metric("m", "", maximize=True), tied, lambda t: "b")
    assert chosen.id == "b" and chosen.tie_break == {"by": "model", "among": ["a", "b"], "chose": "b"}
    assert stages.best(Metric("m", "", maximize=True), tied, lambda t: "c").id == "a"  # only among the tied


def _fake_evaluate(template, calls):
    """A known function of a candidate's constants: best at every constant equal to 1 (a minimised metric: its
    negative); a candidate without constants fails."""
    def evaluate(texts, hparams):
        calls.append(len(texts))
        rows, errors = [], []
        for text in texts:
            values = operators.constants(template, text)
            errors.append(None if values else "no constants")
            score = -sum((v - 1.0) ** 2 for v in values) if values else np.nan
            rows.append([template.metric.sign * score] * len(SEARCH["seeds"]))
        return {"final": {s: np.asarray(rows) for s in SEARCH["settings"]}, "errors": errors}

    return evaluate


def _grow(template, record, calls, text):
    """Every stage of a tree over the fake evaluation; (grower, root, tune result, improve result, ablate result)."""
    grower = stages.Grower(template, record, _fake_evaluate(template, calls), SEARCH)
    root = stages.implement(grower, [{"accepted": False, "reason": "static: no"}, {"accepted": True}], text, "idea")
    tuned = stages.tune(grower, root, 8, "random", seed=0)
    improved = stages.improve(grower, tuned["best"], 2, 3, {"Name": "idea"})
    ablated = stages.ablate(grower, improved["best"], _baselines(template), 3, {"Name": "idea"})
    return grower, root, tuned, improved, ablated


@pytest.mark.parametrize(("name", "method", "maximize"), [
    ("lpo", "ppo_clip", True), ("lpo", "ppo_clip", False), ("dpo", "ipo", True), ("hades", "hades_r", True),
    ("bbo", "recomb_snes", False)])
def test_stages_over_an_evaluation(tmp_path, name, method, maximize):
    base = make(name)
    lr = Continuous("lr", 1e-4, 1e-2, log=True)  # a declared hyperparameter (the fake evaluation ignores it)
    template = dataclasses.replace(base, metric=Metric("m", "", maximize=maximize), hparams=(lr,))
    calls = []
    record = TreeRecord.open(tmp_path / "tree.json", {"idea": "idea", "search": SEARCH})
    text = base.baselines[method].source
    grower, root, tuned, improved, ablated = _grow(template, record, calls, text)
    kinds = [(n.kind, n.buggy, n.why) for n in record.of_stage("implement")]
    assert kinds == [("draft", True, "static: no"), ("debug", False, "repairs: static: no")]
    values = operators.constants(template, text)
    assert root.score == pytest.approx(template.metric.sign * -sum((v - 1) ** 2 for v in values))
    assert root.cost == 2 * 30
    assert tuned["evaluations"] == 8 and len(tuned["nodes"]) <= 8 and tuned["cost"] == 8 * 60
    assert all(set(n.hparams) == {"lr"} for n in tuned["nodes"])
    assert template.metric.improvement(tuned["best"].score, root.score) >= 0
    other = next(b for b in base.baselines if b != method and operators.constants(template, base.baselines[b].source))
    baseline = grower.grow([{"stage": "tune", "kind": "tune", "method": other, "role": "baseline",
                             "candidate": base.baselines[other].source, "label": "untuned"}])[0]
    assert stages.tune(grower, baseline, 8, "random", seed=0)["evaluations"] == tuned["evaluations"]
    assert {n.round for n in improved["nodes"]} <= {0, 1} and 0 < len(improved["nodes"]) <= 6
    assert all(n.parent is not None and n.hparams == tuned["best"].hparams for n in improved["nodes"])
    assert template.metric.improvement(improved["best"].score, tuned["best"].score) >= 0
    assert len(ablated["rows"]) <= 3
    for row in ablated["rows"]:
        node = record.get(row["node"])
        if node.score is not None:
            assert row["delta"] == pytest.approx(template.metric.improvement(node.score, improved["best"].score))
    # grown again on the same record: every node is found by its id, nothing is evaluated
    count = len(calls)
    again = TreeRecord.open(record.path, {"idea": "idea", "search": SEARCH})
    grower2, _, _, improved2, _ = _grow(template, again, calls, text)
    assert len(calls) == count and grower2.evaluated == 0
    assert improved2["best"].id == improved["best"].id


class _Broken:
    source = "llm"

    def __init__(self, reply):
        self.reply = reply

    def improve(self, *args):
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def ablate(self, *args):
        return self.improve()


@pytest.mark.parametrize("reply", [RuntimeError("server gone"), [("x", "import os\n")], [("y", 3)], []])
def test_a_failing_proposer_falls_back_to_the_offline_proposal(reply):
    lpo = make("lpo")
    text = lpo.baselines["ppo_clip"].source
    asked = {"Name": "i", "tree_node": {"candidate": text, "baselines": _baselines(lpo)}}
    out, source, why = stages.propose(lpo, _Broken(reply), "improve", ("lpo", asked, "", [text], 2), 2)
    offline, offline_source, _ = stages.propose(lpo, None, "improve", ("lpo", asked, "", [text], 2), 2)
    assert source == "llm-fallback" and why and out == offline and offline_source == "offline" and out
    good = [("a variant", operators.with_constants(lpo, text, [0.7, 1.3]))]
    assert stages.propose(lpo, _Broken(good), "improve", ("lpo", asked, "", [text], 2), 2) == (good, "llm", None)


def test_search_plan_seeds_and_profile_dicts():
    lpo = make("lpo")
    prof = lpo.profile("smoke")
    plan = search_plan(lpo, profile_of(dataclasses.asdict(prof)))
    assert plan["seeds"] == [TREE_SEED0 + i for i in range(prof.tree.seeds)]
    assert plan["settings"] == [s for s in prof.settings if not lpo.setting(s).held_out]
    assert plan["budget"] == {s: max(1, round(prof.tree.fraction * prof.budget_of(lpo.setting(s))))
                              for s in plan["settings"]}
    as_json = json.loads(json.dumps(dataclasses.asdict(prof)))
    assert profile_of(as_json) == prof
