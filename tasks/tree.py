"""The research tree of an idea (ARCHITECTURE.md, "The research tree"): implement, tune, improve and ablate nodes,
each stage's nodes evaluated together through ``Template.evaluate_population``; the replication is the
experiments stage's (``flows/pipeline.py``).

* :func:`tune_baselines`: once per run, every baseline of the profile tuned with the same evaluation budget
  (``TreeBudget.tune``) as each candidate, into ``runs/<id>/tree/baselines.json``;
* :func:`grow_tree`: an idea's tree in ``<idea_dir>/tree/tree.json`` (written after every population call and
  resumed node by node after a kill: a node already in the file is never evaluated again), a Prefect artifact per
  stage, and the tree view ``tree/tree.png`` and ``tree/tree.html``.

The stages themselves are pure (``jaxlib_kernels.tree``); the search settings, seeds and budgets are
``jaxlib_kernels.tree.search_plan``'s. ``proposer`` (improve, ablate, debug) is offline by default
(:class:`OfflineProposer`); the LLM one (``tasks/llm/tree.py``) implements the same protocol and falls back to the
offline proposal, recorded in the nodes' ``source``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from prefect.context import FlowRunContext, TaskRunContext

from jaxlib_kernels.templates import make
from jaxlib_kernels.tree import profile_of, replication_seeds, search_plan, stages, view
from jaxlib_kernels.tree.record import Node, TreeRecord
from jaxlib_kernels.tree.stages import OfflineProposer
from tasks import tuning
from tasks.codegen import candidate_file
from tasks.runtime import artifacts
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json

log = logging.getLogger(__name__)
TREE_MODULES = ("jaxlib_kernels.tree", "jaxlib_kernels.tree.record", "jaxlib_kernels.tree.operators",
                "jaxlib_kernels.tree.stages", "jaxlib_kernels.tree.view", "jaxlib_kernels.optimisers",
                "jaxlib_kernels.optimisers.evotf", "jaxlib_kernels.optimisers.sequence", "tasks.tuning")
TUNE_SEED = 0  # the optimiser's samples: the same for the candidate and every baseline


def _header(template, prof, name: str) -> dict:
    return {"idea": name, "template": template.name,
            "metric": {"name": template.metric.name, "maximize": template.metric.maximize},
            "search": search_plan(template, prof), "replication_seeds": replication_seeds(prof),
            "budgets": dataclasses.asdict(prof.tree), "budget_unit": template.budget_unit}


def _grower(template, record: TreeRecord) -> stages.Grower:
    search = record.data["search"]
    return stages.Grower(template, record, stages.population_evaluator(template, search), search)


def _defaults(template, search: dict) -> dict:
    """The untuned hyperparameters (the first search setting's kernel configuration)."""
    if not template.hparams or not search["settings"]:
        return {}
    s = search["settings"][0]
    return template.hparam_defaults(template.setting(s), int(search["budget"][s]))


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_stage(record: TreeRecord, stage_name: str, nodes: list[Node]) -> None:
    """The stage's nodes as a Prefect table artifact (``tree-<idea>-<stage>``: node, kind, label, metric, best),
    inside a run only and best effort."""
    if not _in_run() or not nodes:
        return
    best = record.data["best"].get(stage_name)
    rows = [{"node": n.id, "parent": n.parent, "kind": n.kind, "method": n.method, "label": n.label,
             record.data["metric"]["name"]: None if n.score is None else round(n.score, 4), "buggy": n.buggy,
             "best": n.id == best, "source": n.source} for n in nodes]
    idea = record.data["idea"]
    artifacts.table(key=artifacts._key(f"tree-{idea}-{stage_name}"), table=rows,
                    description=f"Research tree of {idea}: the {stage_name} stage ({len(rows)} nodes, best {best})")


def _finish_stage(record: TreeRecord, stage_name: str, chosen: Node | None, nodes: list[Node]) -> None:
    record.data["best"][stage_name] = chosen.id if chosen is not None else None
    if chosen is not None and chosen.tie_break:
        record.add(chosen)
    record.done(stage_name)
    record.save()
    publish_stage(record, stage_name, nodes)


# ---- the run's baselines -------------------------------------------------------------------------------------------

def tune_baselines(template_name: str, profile: dict, run_tree_dir: str, optimiser: str = "evotf") -> dict:
    """Every baseline of the profile tuned with ``TreeBudget.tune`` evaluations (what each candidate gets), from
    its untuned node, on the tree's search settings and seeds; ``<run_tree_dir>/baselines.json`` (a tree record:
    resumed node by node). Returns ``{baseline: {"before", "after", "source", "hparams", "score_before",
    "score_after", "evaluations", "cost", ...}}``."""
    template, prof = make(template_name), profile_of(profile)
    record = TreeRecord.open(Path(run_tree_dir) / "baselines.json", _header(template, prof, "baselines"))
    grower = _grower(template, record)
    defaults = _defaults(template, record.data["search"])
    out = {}
    for name in prof.baselines:
        untuned = grower.grow([{"stage": "tune", "kind": "tune", "method": name, "role": "baseline",
                                "candidate": template.baseline(name).source, "label": "untuned"}])[0]
        result = stages.tune(grower, untuned, prof.tree.tune if "tune" in prof.tree.stages else 0, optimiser,
                             TUNE_SEED, tuning.tune, defaults)
        out[name] = stages.tuning_entry(result, "baseline")
        record.data["tuning"][name] = out[name]
        record.save()
    record.done("tune")
    record.save()
    return out


# ---- an idea's tree ------------------------------------------------------------------------------------------------

def _attempts(idea_dir: Path) -> list[dict]:
    return list((read_json(idea_dir / "validation.json", {}) or {}).get("attempts") or [])


def _accepted(template, idea: dict, idea_dir: Path) -> str | None:
    validation = read_json(idea_dir / "validation.json", {}) or {}
    if validation and not validation.get("accepted", False):
        return None
    path = idea_dir / candidate_file(template)
    return path.read_text() if path.exists() else idea.get("source")


def grow_tree(template_name: str, idea: dict, idea_dir: str, profile: dict, baseline_tuning: dict | None = None,
              proposer=None, optimiser: str = "evotf") -> dict:
    """The idea's research tree: implement (draft and debug nodes of the code stage's attempts, the accepted one
    evaluated), tune, improve, ablate (``TreeBudget.stages`` chooses; the replication is the flow's), in
    ``<idea_dir>/tree/tree.json``. Returns ``{"path", "final", "best", "tuning", "ablation", "nodes" (count per
    stage), "evaluated" (nodes evaluated by this call), "view"}``. A ``proposer`` with ``tie_break(nodes) -> id``
    may choose among nodes of exactly equal best score (recorded in the chosen node's ``tie_break``)."""
    template, prof = make(template_name), profile_of(profile)
    idea_dir = Path(idea_dir)
    tree_dir = idea_dir / "tree"
    name = idea["Name"]
    record = TreeRecord.open(tree_dir / "tree.json", _header(template, prof, name))
    grower = _grower(template, record)
    budgets = prof.tree
    for b, entry in (baseline_tuning or {}).items():
        record.data["tuning"][b] = entry

    chooser = getattr(proposer, "tie_break", None)  # a model may break exact ties of a stage's best, nothing more
    root = stages.implement(grower, _attempts(idea_dir), _accepted(template, idea, idea_dir), name)
    _finish_stage(record, "implement", root, record.of_stage("implement"))
    final = root
    if root is not None and "tune" in budgets.stages:
        result = stages.tune(grower, root, budgets.tune, optimiser, TUNE_SEED, tuning.tune,
                             _defaults(template, record.data["search"]), chooser)
        record.data["tuning"][name] = stages.tuning_entry(result, "candidate")
        final = result["best"]
        _finish_stage(record, "tune", final, result["nodes"])
    if final is not None and "improve" in budgets.stages:
        result = stages.improve(grower, final, budgets.improve_rounds, budgets.improve_width, idea, proposer,
                                chooser)
        final = result["best"]
        _finish_stage(record, "improve", final, result["nodes"])
    if final is not None:
        record.data["final"] = {"node": final.id, "candidate": final.candidate, "hparams": final.hparams,
                                "score": final.score}
    if final is not None and "ablate" in budgets.stages:
        known = {b: template.baseline(b).source for b in prof.baselines}  # the known forms, as published
        result = stages.ablate(grower, final, known, budgets.ablate, idea, proposer)
        record.data["ablation"] = result["rows"]
        _finish_stage(record, "ablate", stages.best(template.metric, result["nodes"]), result["nodes"])
    try:
        record.data["view"] = view.write(record.data, tree_dir)
    except Exception as exc:  # noqa: BLE001 - the view is for people; the record is what the stages read
        log.warning("tree view of %s not drawn: %s", name, exc)
    record.save()
    counts = {s: len(record.of_stage(s)) for s in ("implement", "tune", "improve", "ablate")}
    return {"path": str(record.path), "final": record.data["final"], "best": record.data["best"],
            "tuning": record.data["tuning"], "ablation": record.data["ablation"], "nodes": counts,
            "evaluated": grower.evaluated, "view": record.data["view"]}


__all__ = ["OfflineProposer", "grow_tree", "publish_stage", "tune_baselines"]


# ---- Prefect tasks ----------------------------------------------------------------------------------------------

tune_baselines_task = stage(name="tree_tune_baselines", modules=TREE_MODULES)(tune_baselines)


@stage(name="grow_tree", modules=TREE_MODULES)
def grow_tree_task(template_name: str, idea: dict, idea_dir: str, profile: dict, baseline_tuning: dict | None = None,
                   optimiser: str = "evotf") -> dict:
    """Prefect task over :func:`grow_tree` with the offline proposer."""
    return grow_tree(template_name, idea, idea_dir, profile, baseline_tuning, None, optimiser)
