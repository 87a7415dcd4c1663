"""The per-idea research pipeline shared by every flow: code -> research tree -> experiments (the replication) on
Ray -> aggregation -> plots -> paper -> review. The AI-Scientist flow runs it on the novel ideas of a run; the meta-learning flow runs it on the
candidate its ES found (a parametric drift rendered as source), so there is one copy of these stages.

The units of every idea (and the baselines once) go to Ray in one wave, so the cluster is saturated and baseline
units are computed once per run, not once per idea; the stages after it run concurrently (mapped) on Prefect's
thread pool. Every stage is a cached Prefect task (``tasks/runtime/caching.py``): re-running a run id resumes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from jaxlib_kernels.templates import Profile, Template
from tasks import aggregation, experiments
from tasks.backends import OfflineBackend, results, wait
from tasks.idea import Idea, IdeaStatus, has_status, set_status
from tasks.runtime.llm import BudgetExceeded, redact
from tasks.runtime.runfolder import RunFolder, read_json, write_json


def baseline_specs(template: Template, prof: Profile, tuning: dict | None = None) -> list[dict]:
    """Every baseline's units; a baseline in ``tuning`` (``tasks.tree.tune_baselines``) runs its tuned source and
    hyperparameters."""
    tuning = tuning or {}
    return [spec for b in prof.baselines for spec in experiments.unit_specs(
        template, prof, b, "baseline", (tuning.get(b) or {}).get("source") or template.baseline(b).source,
        hparams=(tuning.get(b) or {}).get("hparams") or None)]


def with_nearest_baselines(template: Template, prof: Profile, ideas: list[dict]) -> Profile:
    """The profile with, after its own baselines, each idea's nearest baseline (novelty's measured relation) that
    it lacks: the nearest known candidate is always run (the baselines are run once for all the run's ideas)."""
    nearest = [((i.get("novelty") or {}).get("relation") or {}).get("nearest_baseline") for i in ideas]
    extra = [b for b in dict.fromkeys(nearest) if b in template.baselines and b not in prof.baselines]
    return dataclasses.replace(prof, baselines=(*prof.baselines, *extra)) if extra else prof


def candidate_specs(template: Template, prof: Profile, idea: dict) -> list[dict]:
    """The candidate's units: the tree's final candidate and hyperparameters when it grew one (the replication),
    else the implemented source."""
    final = replicated(idea, prof) or {}
    return experiments.unit_specs(template, prof, idea["Name"], "candidate", final.get("candidate") or idea["source"],
                                  hparams=final.get("hparams") or None)


def replicated(idea: dict, prof: Profile) -> dict | None:
    """The tree's final node (``{"candidate", "hparams", ...}``) the experiments replicate, or None: no tree, a
    failed one, or the replicate stage off."""
    tree = idea.get("tree") or {}
    if "replicate" not in prof.tree.stages or tree.get("error") or not (tree.get("final") or {}).get("candidate"):
        return None
    return tree["final"]


def load_baseline_tuning(run_dir: Path) -> dict:
    """A run's baseline tuning (``tree/baselines.json``'s ``tuning``, written by ``tasks.tree.tune_baselines``); {}
    when none."""
    return (read_json(Path(run_dir) / "tree" / "baselines.json", {}) or {}).get("tuning") or {}


def grow_trees(backend: OfflineBackend, template: Template, prof: Profile, run: RunFolder, ready: list[Idea],
               checkpoint=lambda: None) -> dict:
    """The research tree of every ready idea (ARCHITECTURE.md, "The research tree"): the baselines tuned once for
    the run (the tune stage), then each idea's tree mapped on the thread pool. ``idea["tree"]`` is its summary, or
    ``{"error": reason}`` when its tree failed (the idea goes on with its implemented candidate). Returns the
    baselines' tuning (``{}`` when the tune stage is off)."""
    if not ready:
        return {}
    prof = with_nearest_baselines(template, prof, ready)
    profile = dataclasses.asdict(prof)
    tuning = {}
    if "tune" in prof.tree.stages:
        print(f"tuning {len(prof.baselines)} baselines ({prof.tree.tune} evaluations each)")
        try:
            tuning = backend.tune_baselines(template.name, profile, str(run.path / "tree")) or {}
        except BudgetExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - untuned baselines still make a paper; run.json says why
            reason = f"{type(exc).__name__}: {redact(exc)}"
            print(f"tuning the baselines failed ({reason}); they run untuned")
            run.update_run_json(baseline_tuning_error=reason)
        checkpoint()
    print(f"growing the research tree of {len(ready)} ideas (stages: {', '.join(prof.tree.stages)})")
    trees = backend.tree(template.name, ready, [str(run.idea_dir(i["Name"])) for i in ready], profile, tuning)
    for idea, tree in zip(ready, trees, strict=True):
        idea["tree"] = tree
        if tree.get("error"):
            set_status(idea, IdeaStatus.IMPLEMENTED, f"tree failed ({tree['error']}); the implemented candidate "
                                                     "goes on")
            print(f"{idea['Name']}: the research tree failed ({tree['error']}); its implemented candidate goes on")
        else:
            nodes = ", ".join(f"{n} {stage}" for stage, n in (tree.get("nodes") or {}).items())
            score = (tree.get("final") or {}).get("score")
            print(f"{idea['Name']}: research tree with nodes {nodes}; final score "
                  f"{f'{score:.3f}' if isinstance(score, float) else score}")
            adopt_final(template, prof, idea)
    write_json(run.ideas_json, read_ideas(run, ready))
    checkpoint()
    return tuning


def adopt_final(template: Template, prof: Profile, idea: dict) -> None:
    """The tree's final candidate becomes the idea's: its source, expression and formula (the plots and the paper
    show what the replication runs); the implemented one is kept as ``implemented_source`` (and its expression as
    ``implemented_expression``)."""
    from jaxlib_kernels import symbolic
    from jaxlib_kernels.tree import operators

    final = replicated(idea, prof)
    if final is None or final["candidate"] == idea["source"]:
        return
    idea["implemented_source"], idea["implemented_expression"] = idea["source"], idea.get("expression")
    idea["source"] = final["candidate"]
    expr = operators.expression_of(template, final["candidate"])
    language = operators.language_of(template)
    if expr is not None:
        idea["expression"] = expr
        idea["expression_latex"] = symbolic.to_latex(expr, language.variables)
    elif template.plugin.kind == "source":  # no formula of the tuned text: the paper prints it verbatim
        idea["expression"], idea["expression_latex"] = None, None


def tuned_methods(template: Template, prof: Profile, idea: dict, tuning: dict) -> dict:
    """``{method: {"hparams", "constants_changed"}}``: what each method of an idea's replication ran with, the
    hyperparameters and whether its text differs from the untuned one (tuned constants or, for the candidate, the
    improve stage's variant); empty when nothing was tuned."""
    out = {}
    final = replicated(idea, prof)
    if final is not None:
        out[idea["Name"]] = {"hparams": dict(final.get("hparams") or {}),
                             "constants_changed": final.get("candidate") != idea.get("implemented_source",
                                                                                      idea["source"])}
    for b in prof.baselines:
        if b in tuning:
            out[b] = {"hparams": dict(tuning[b].get("hparams") or {}),
                      "constants_changed": tuning[b].get("source", template.baseline(b).source)
                      != template.baseline(b).source}
    return out if any(t["hparams"] or t["constants_changed"] for t in out.values()) else {}


def result_summary(idea: dict, info: dict) -> dict:
    """Means over training / held-out settings and the number of significant wins (the metric's direction)."""
    train = [v for v in info.values() if not v["held_out"]]
    held = [v for v in info.values() if v["held_out"]]
    name = idea["Name"]

    def mean(entries, key=None):
        vals = [e["means"].get(key or e.get("comparison", {}).get("best_baseline")) for e in entries]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    return {
        "train_mean": mean(train, name), "held_out_mean": mean(held, name), "best_baseline_mean": mean(train),
        "significant_wins": sum(1 for e in info.values() if (e.get("comparison") or {}).get("better")),
        "significant_losses": sum(1 for e in info.values() if (e.get("comparison") or {}).get("worse")),
        "maximize": bool(next(iter(info.values()), {}).get("maximize", True)),
    }


def implement(backend: OfflineBackend, template: Template, run: RunFolder, novel: list[Idea],
              archive_rows: list[dict]) -> list[Idea]:
    """Code + validation gate for the novel ideas; returns those that passed (status "implemented")."""
    dirs = [str(run.idea_dir(i["Name"])) for i in novel]
    impls = backend.implement(template.name, novel, dirs, archive_rows)
    for idea, impl in zip(novel, impls, strict=True):
        if impl is None:
            continue
        idea["source"], idea["validation"] = impl["source"], impl["validation"]
        attempts = len(impl.get("attempts") or [1])
        if impl["accepted"]:
            set_status(idea, IdeaStatus.IMPLEMENTED)
        else:
            set_status(idea, IdeaStatus.REJECTED, impl["validation"]["reason"],
                       qualifier=f"after {attempts} attempt{'s' if attempts != 1 else ''}")
        if impl["accepted"] and impl.get("behaviour"):
            apply_behaviour(idea, impl)
    return [i for i in novel if has_status(i, IdeaStatus.IMPLEMENTED)]


def apply_behaviour(idea: dict, impl: dict) -> None:
    """The accepted source's behavioural distance joins the model's literature decision."""
    behaviour = impl.get("behaviour") or {}
    idea["expression_latex"] = impl.get("expression_latex") or idea.get("expression_latex")
    nov = idea.setdefault("novelty", {})
    nov.update(nearest=behaviour.get("nearest"), distance=behaviour.get("distance"),
               distances=behaviour.get("distances", {}), behaviour_decision=behaviour.get("decision"),
               behaviour_reason=behaviour.get("reason"), relation=behaviour.get("relation") or nov.get("relation"))
    if behaviour and behaviour.get("decision") != "novel":
        nov["decision"] = "not novel"
        nov["reason"] = f"{nov.get('reason', '')} Behaviour: {behaviour.get('reason')}".strip()
        set_status(idea, IdeaStatus.NOT_NOVEL, str(behaviour.get("reason")))


def evaluate_and_write(backend: OfflineBackend, template: Template, prof: Profile, run: RunFolder,
                       ready: list[Idea], ray_address: str | None, timings: dict,
                       ray_ready: threading.Event | None = None, checkpoint=lambda: None,
                       labels: dict | None = None, extra_figures: dict[str, list[dict]] | None = None,
                       tuning: dict | None = None) -> list[Idea]:
    """Experiments (one wave on Ray), then per idea aggregation, plots, paper and review; returns reviewed ideas.

    With research trees (:func:`grow_trees`) the experiments are the replication: each candidate's tree's final
    candidate and hyperparameters, each baseline's ``tuning``, on the profile's seeds (never the tree's) and every
    setting; ``final_info.json`` records what each method ran with (``tuned``) and ``replication``."""
    store = backend.store
    s = time.time()
    prof = with_nearest_baselines(template, prof, ready)
    tuning = tuning if "replicate" in prof.tree.stages else {}
    base = baseline_specs(template, prof, tuning)
    cand = {i["Name"]: candidate_specs(template, prof, i) for i in ready}
    specs = base + [spec for ss in cand.values() for spec in ss]
    print(f"running {len(specs)} experiment units ({prof.seeds} seeds each) on Ray")
    if ray_ready is not None:
        ray_ready.wait()
    experiments.run_experiments_task.with_options(**store)(specs, str(run.units_dir), ray_address)
    timings["experiments"] = time.time() - s

    s = time.time()
    dirs = {i["Name"]: str(run.idea_dir(i["Name"])) for i in ready}
    tuned = [tuned_methods(template, prof, i, tuning or {}) for i in ready]
    for idea, t in zip(ready, tuned, strict=True):
        idea["replication"] = {"seeds": list(range(prof.seeds)), "settings": list(prof.settings), "tuned": t,
                               "from_tree": replicated(idea, prof) is not None}
    aggs = results(wait(aggregation.aggregate_task.with_options(**store).map(
        template.name, ready, [base + cand[i["Name"]] for i in ready], str(run.units_dir),
        [dirs[i["Name"]] for i in ready], [i["replication"] for i in ready]), ready, "aggregation"))
    done = []
    for idea, agg in zip(ready, aggs, strict=True):
        if agg is not None:
            idea["final_info"], idea["result"] = agg["final_info"], result_summary(idea, agg["final_info"])
            done.append(idea)
    figs = backend.plots(template.name, done, [dirs[i["Name"]] for i in done])
    plotted = [(i, f + list((extra_figures or {}).get(i["Name"], []))) for i, f in zip(done, figs, strict=True)
               if f is not None]
    context = {"profile": dataclasses.asdict(prof), "run_id": run.run_id, "labels": labels or {}}
    papers = backend.write(template.name, [i for i, _ in plotted], [f for _, f in plotted], context,
                           [dirs[i["Name"]] for i, _ in plotted])
    written = []
    for (idea, _), paper in zip(plotted, papers, strict=True):
        if paper is not None:
            idea["paper"] = paper
            written.append(idea)
    checkpoint()
    reviews = backend.review(template.name, written, [dirs[i["Name"]] for i in written])
    for idea, rev in zip(written, reviews, strict=True):
        if rev is not None:
            idea["review"] = rev
            set_status(idea, IdeaStatus.REVIEWED)
    timings["analysis+writeup+review"] = time.time() - s
    write_json(run.ideas_json, read_ideas(run, ready))
    return [i for i in written if i.get("review")]


def read_ideas(run: RunFolder, ideas: list[Idea]) -> list[Idea]:
    """``ideas.json``'s ideas with these (updated) ones in place of their earlier versions."""
    by_name = {i["Name"]: i for i in ideas}
    old = read_json(run.ideas_json, []) or []
    merged = [by_name.pop(i["Name"], i) for i in old]
    return merged + list(by_name.values())
