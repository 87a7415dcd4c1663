"""The research tree of an idea (ARCHITECTURE.md, "The research tree"): implement, tune, improve, ablate, replicate.

Pure: no Prefect, Ray, tasks or flows. :mod:`.record` is the tree's record (``<idea_dir>/tree/tree.json``, nodes
looked up by a stable id so a killed tree resumes node by node), :mod:`.operators` the candidate operators
(constants, variants, ablations) generic by candidate kind, :mod:`.stages` the stages over an evaluation callable
(``tasks/tree.py`` runs them through ``Template.evaluate_population``).

Seeds are explicit and disjoint: the tree searches on ``TREE_SEED0 + i`` (``TreeBudget.seeds`` of them, training
settings only, a ``TreeBudget.fraction`` of each setting's budget); the replication, whose runs are the paper's
main results, uses ``REPLICATION_SEED0 + i`` (the profile's ``seeds``, every setting); offline ideation screens on
``jaxlib_kernels.search.offline.SCREEN_SEED_OFFSET + i``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TREE_SEED0 = 1000
REPLICATION_SEED0 = 0
STAGES = ("implement", "tune", "improve", "ablate", "replicate")
KINDS = ("draft", "debug", "tune", "improve", "ablate", "replicate")


def profile_of(profile: Any):
    """A :class:`~jaxlib_kernels.templates.base.Profile` from itself or its dict (``dataclasses.asdict``, maybe
    through JSON: lists where the dataclass has tuples)."""
    from jaxlib_kernels.templates.base import Profile, TreeBudget

    if isinstance(profile, Profile):
        return profile
    fields = dict(profile)
    tree = fields.get("tree")
    if isinstance(tree, Mapping):
        tree = dict(tree)
        tree["stages"] = tuple(tree.get("stages", TreeBudget().stages))
        fields["tree"] = TreeBudget(**tree)
    for key in ("settings", "baselines"):
        fields[key] = tuple(fields[key])
    return Profile(**fields)


def search_plan(template, profile) -> dict:
    """Where the tree's nodes are evaluated: ``{"settings", "seeds", "budget": {setting: budget}}``, the profile's
    training settings at ``TreeBudget.fraction`` of their budget, on the tree's seeds."""
    tree = profile.tree
    settings = [s for s in profile.settings if not template.setting(s).held_out]
    budget = {s: max(1, round(tree.fraction * profile.budget_of(template.setting(s)))) for s in settings}
    return {"settings": settings, "seeds": [TREE_SEED0 + i for i in range(tree.seeds)], "budget": budget}


def replication_seeds(profile) -> list[int]:
    """The replication's seeds (the paper's main results): never used by the tree."""
    return [REPLICATION_SEED0 + i for i in range(profile.seeds)]


__all__ = ["KINDS", "REPLICATION_SEED0", "STAGES", "TREE_SEED0", "profile_of", "replication_seeds", "search_plan"]
