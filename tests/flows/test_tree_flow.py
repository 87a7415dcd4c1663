"""The research tree in the flow, without a run: the flags' budget, the replication's units (the tree's final
candidate and the tuned baselines, or today's units when nothing was tuned), what final_info and summary.md record.
(Every template's smoke run with its tree: tests/flows/test_template_runs.py.)"""

import dataclasses
import json

import pytest

from flows import pipeline
from flows.scientist import _profile
from jaxlib_kernels.templates import TEMPLATES, make
from jaxlib_kernels.templates.base import SMOKE_TREE, TREE_STAGES, TreeBudget
from tasks import summary
from tasks.idea import IdeaStatus, set_status
from tasks.runtime.llm import BudgetExceeded
from tasks.runtime.runfolder import RunFolder, read_json


def test_every_profile_sizes_its_tree_and_the_smoke_trees_are_small():
    for name in TEMPLATES:
        template = make(name)
        for prof in template.profiles.values():
            assert isinstance(prof.tree, TreeBudget) and prof.tree.stages == TREE_STAGES, (name, prof.name)
        assert template.profile("smoke").tree == SMOKE_TREE
        assert SMOKE_TREE.tune <= template.profile("default").tree.tune


def test_the_flags_change_the_profiles_tree_and_nothing_else():
    template = make("lpo")
    prof = _profile(template, "smoke", None, None, None, ["ablate", "tune"], {"tune": "3", "fraction": 0.5})
    assert prof.tree == dataclasses.replace(SMOKE_TREE, tune=3, fraction=0.5, stages=("tune", "ablate"))
    assert dataclasses.replace(prof, tree=SMOKE_TREE) == template.profile("smoke")
    assert _profile(template, "smoke", None, None, None) == template.profile("smoke")
    with pytest.raises(ValueError, match="unknown stage 'tuen'"):
        _profile(template, "smoke", None, None, None, ["tuen"])


def _idea(template):
    return {"Name": "cand", "source": template.baseline("ppo_clip").source}


def test_the_replication_runs_the_trees_final_candidate_and_the_tuned_baselines():
    template = make("lpo")
    prof = template.profile("smoke")
    idea = _idea(template)
    today = pipeline.candidate_specs(template, prof, idea)
    tuned_text = template.baseline("kl").source
    idea["tree"] = {"final": {"candidate": tuned_text, "hparams": {"lr": 1e-3}}}
    specs = pipeline.candidate_specs(template, prof, idea)
    assert [s["source"] for s in specs] == [tuned_text] * len(prof.settings)
    assert all(s["hparams"] == {"lr": 1e-3} and s["seeds"] == list(range(prof.seeds)) for s in specs)
    assert [s["setting"] for s in specs] == list(prof.settings)  # every setting, the held-out ones too
    # the replicate stage off, or a failed tree: the units of today
    off = dataclasses.replace(prof, tree=prof.tree.with_changes(stages="implement,tune"))
    assert pipeline.candidate_specs(template, off, idea) == today
    assert pipeline.candidate_specs(template, prof, {**idea, "tree": {"error": "boom"}}) == today

    tuning = {"kl": {"source": template.baseline("kl").source, "hparams": {"lr": 2e-3}}}
    base = pipeline.baseline_specs(template, prof, tuning)
    assert base != pipeline.baseline_specs(template, prof)
    assert pipeline.baseline_specs(template, prof, {}) == pipeline.baseline_specs(template, prof)
    assert {s["method"]: s.get("hparams") for s in base} == {"ppo_clip": None, "kl": {"lr": 2e-3}, "no_drift": None}
    assert pipeline.tuned_methods(template, prof, idea, tuning) == {
        "cand": {"hparams": {"lr": 1e-3}, "constants_changed": True},
        "kl": {"hparams": {"lr": 2e-3}, "constants_changed": False}}
    assert pipeline.tuned_methods(template, prof, _idea(template), {}) == {}


def test_summary_links_each_ideas_tree_view(tmp_path):
    ideas = [{"Name": "a", "tree": {"view": {"png": "tree/tree.png", "html": "tree/tree.html"},
                                    "nodes": {"implement": 1, "tune": 4}}},
             {"Name": "b", "tree": {"error": "ValueError: no constants"}}]
    text = summary.write_summary(tmp_path, "r", ideas, {})
    assert "[tree.png](ideas/a/tree/tree.png)" in text and "[tree.html](ideas/a/tree/tree.html)" in text
    assert "b: no tree (ValueError: no constants)" in text
    assert json.dumps(ideas)  # the summaries stay JSON (ideas.json)


class _FailingTrees:
    """A backend whose baseline tuning raises and whose every tree fails (as ``OfflineBackend.tree`` reports it)."""

    def tune_baselines(self, template_name, profile, tree_dir):
        raise RuntimeError("no evaluation today")

    def tree(self, template_name, ideas, dirs, profile, tuning):
        return [{"error": "ValueError: no constant to tune"} for _ in ideas]


class _SpentBudget(_FailingTrees):
    def tune_baselines(self, template_name, profile, tree_dir):
        raise BudgetExceeded("the run's budget of $0.01 is spent")


def test_a_failed_tree_is_recorded_and_its_idea_goes_on_with_the_units_of_today(tmp_path):
    template = make("lpo")
    prof = template.profile("smoke")
    run = RunFolder(tmp_path, "r")
    run.create()
    idea = set_status(_idea(template), IdeaStatus.IMPLEMENTED)
    today = pipeline.candidate_specs(template, prof, idea)
    tuning = pipeline.grow_trees(_FailingTrees(), template, prof, run, [idea])
    assert tuning == {} and "RuntimeError: no evaluation today" in read_json(run.run_json)["baseline_tuning_error"]
    assert idea["tree"] == {"error": "ValueError: no constant to tune"}
    assert idea["status"].startswith("implemented: tree failed (ValueError: no constant to tune)")
    assert read_json(run.ideas_json)[0]["tree"] == idea["tree"]
    assert pipeline.candidate_specs(template, prof, idea) == today
    assert pipeline.baseline_specs(template, prof, tuning) == pipeline.baseline_specs(template, prof)
    assert pipeline.tuned_methods(template, prof, idea, tuning) == {}


def test_a_spent_budget_in_the_tree_stage_stops_the_run(tmp_path):
    """BudgetExceeded is never a tree failure: it reaches the flow, which ends the run with what is finished."""
    template = make("lpo")
    run = RunFolder(tmp_path, "r")
    run.create()
    with pytest.raises(BudgetExceeded):
        pipeline.grow_trees(_SpentBudget(), template, template.profile("smoke"), run, [_idea(template)])
