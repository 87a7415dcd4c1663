"""The research tree's stage (placeholder until branch ``tree`` is merged: its ``tasks/tree.py`` replaces this file).

Signatures of /work/wt/TREE_SPEC.md; both stages fail, so a run records the failure and goes on untuned.
"""

from __future__ import annotations

from tasks.runtime.caching import stage


def tune_baselines(template_name: str, profile: dict, run_tree_dir: str, optimiser: str = "evotf") -> dict:
    raise NotImplementedError("the research tree is not merged yet")


def grow_tree(template_name: str, idea: dict, idea_dir: str, profile: dict, baseline_tuning: dict, proposer=None,
              optimiser: str = "evotf") -> dict:
    raise NotImplementedError("the research tree is not merged yet")


@stage(name="tune_baselines")
def tune_baselines_task(template_name: str, profile: dict, run_tree_dir: str) -> dict:
    return tune_baselines(template_name, profile, run_tree_dir)


@stage(name="grow_tree")
def grow_tree_task(template_name: str, idea: dict, idea_dir: str, profile: dict, baseline_tuning: dict,
                   proposer=None) -> dict:
    return grow_tree(template_name, idea, idea_dir, profile, baseline_tuning, proposer)
