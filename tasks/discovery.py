"""The discovery stages (``scientist discover``, ``flows/discovery.py``): one generation of the symbolic search, the
model's formulas for a generation, the baselines' constant tuning, and the admission on fresh seeds.

Each is a plain function of JSON inputs (the template by name: its ``Template.discovery`` gives the formula
language, the training call and the budget field, its ``Template.metric`` every ranking's direction), and a cached
``@stage`` over it at the bottom of this module: a resumed search repeats nothing. Admission: the candidates and
the (tuned) baselines re-trained on ``fresh_seeds`` seeds never used by the search, on the training setting and
the held-out ones, in one compiled call per setting; for each (setting, baseline) a one-sided Welch test in the
metric's direction (``jaxlib_kernels.stats.welch``), Holm-Bonferroni across every (setting, baseline) pair of a
candidate (``jaxlib_kernels.stats.holm``), and the interquartile mean (rliable's ``aggregate_iqm``) with
stratified bootstrap 95% intervals beside the mean.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from tasks.runtime import ray_pool
from tasks.runtime.caching import stage

ENGINE = ("jaxlib_kernels.discovery", "jaxlib_kernels.search", "jaxlib_kernels.interpreter", "jaxlib_kernels.symbolic",
          "jaxlib_kernels.es.meta", "jaxlib_kernels.stats")  # the template's own code is in every key (code_key)
FRESH_SEED_OFFSET = 10_000  # admission seeds start here; the search uses 0 .. 2 * seeds


def _sharded(template_name: str, workers: int, ray_address: str | None):
    """``train`` for ``discovery.training_evaluator``: None (one compiled call in this process) or the Ray shards."""
    if workers <= 1:
        return None
    return functools.partial(ray_pool.train_programs_sharded, ray_pool.program_trainers(workers, ray_address),
                             template_name)


def generation(state: dict, search: dict, seed: int, template_name: str, setting: str, budget: int, seeds: int,
               overrides: dict | None, distill_target: list[float] | None = None, workers: int = 0,
               ray_address: str | None = None) -> dict:
    """One generation of the search in the template's formula language, ranked by its metric; with
    ``distill_target`` the fitness is the closeness to that learned formula instead of the trained metric; with
    ``workers`` > 1 the population is trained in that many equal shards on Ray actors at once. ``overrides``
    replace fields of the template's kernel configuration."""
    from jaxlib_kernels import discovery
    from jaxlib_kernels.templates import make

    config = discovery.SearchConfig(**search)
    template = make(template_name)
    language = template.discovery.language
    if distill_target is not None:
        evaluate, metric = discovery.distillation_evaluator(distill_target, language), discovery.CLOSENESS
    else:
        evaluate = discovery.training_evaluator(template, template.setting(setting), budget, seeds, config, overrides,
                                                train=_sharded(template_name, workers, ray_address))
        metric = template.metric
    start = time.time()
    out = discovery.generation(state, config, evaluate, seed, language, metric)
    out["log"][-1]["seconds"] = time.time() - start
    return out


def llm_proposals(template_name: str, model: str, generation: int, archive_rows: list[dict], n: int,
                  max_size: int, fallback: bool) -> dict:
    """The model's formulas for one generation. With ``fallback`` a model that keeps failing gives no proposal,
    and the reason, instead of failing the search."""
    from jaxlib_kernels.templates import make
    from tasks.llm.discovery import propose_formulas
    from tasks.runtime import llm

    try:
        out = propose_formulas(llm.active(model), make(template_name), archive_rows, n, generation, max_size)
    except llm.BudgetExceeded:
        raise
    except llm.LLMError as exc:
        if not fallback:
            raise
        return {"proposals": [], "rejected": [], "fallback": llm.redact(exc)}
    return {**out, "fallback": None}


def baseline_tuning(template_name: str, baselines: dict[str, object], search: dict, seed: int, setting: str,
                    budget: int, seeds: int, overrides: dict | None, generations: int, workers: int = 0,
                    ray_address: str | None = None) -> dict:
    """The baselines' constants tuned with the search's own constant-tuning budget, in the metric's direction."""
    from jaxlib_kernels import discovery
    from jaxlib_kernels.templates import make

    config = discovery.SearchConfig(**search)
    template = make(template_name)
    evaluate = discovery.training_evaluator(template, template.setting(setting), budget, seeds, config, overrides,
                                            train=_sharded(template_name, workers, ray_address))
    return discovery.tune_baselines(baselines, config, evaluate, generations, seed, template.discovery.language,
                                    template.metric)


def admission_stats(scores: dict, baselines: dict, alpha: float, metric) -> dict:
    """:func:`jaxlib_kernels.stats.replication` in ``metric``'s direction: the research tree's replication and the
    admission are one implementation."""
    from jaxlib_kernels import stats

    return stats.replication(scores, baselines, maximize=metric.maximize, alpha=alpha)


def admission(template_name: str, candidates: list[dict], baselines: dict[str, object], settings: list[str],
              training: str, budget: int, fresh_seeds: int, overrides: dict | None, alpha: float, min_held_out: int,
              length: int, population: int) -> list[dict]:
    """Re-train the candidates and baselines on fresh seeds and gate them (see the module docstring): a candidate is
    a discovery when it beats every baseline on the training setting and on at least ``min_held_out`` held-out
    settings at Holm-corrected p < ``alpha``."""
    from jaxlib_kernels import interpreter
    from jaxlib_kernels.templates import make

    template = make(template_name)
    spec = template.discovery
    exprs = [c["expr"] for c in candidates] + list(baselines.values())
    exprs += [exprs[0]] * (-len(exprs) % population)  # the search's population shape: its compiled program fits
    seeds = list(range(FRESH_SEED_OFFSET, FRESH_SEED_OFFSET + fresh_seeds))
    finals = {}
    for s in settings:
        setting = template.setting(s)
        fields = dict(overrides or {})
        steps = int(fields.pop(spec.budget_field, budget) * setting.budget_scale)
        config = dataclasses.replace(template.kernel_config(setting, steps), **fields)
        # (candidates + baselines, seeds)
        programs = interpreter.encode_population(exprs, length, spec.language.name)
        finals[s] = np.asarray(spec.train_programs(config, programs, seeds))
    out = []
    for i, c in enumerate(candidates):
        scores = {s: finals[s][i] for s in settings}
        base = {s: {name: finals[s][len(candidates) + j] for j, name in enumerate(baselines)} for s in settings}
        result = admission_stats(scores, base, alpha, template.metric)
        wins = {s for s in settings if all(t["significant"] for t in result["tests"] if t["setting"] == s)}
        held_out = sorted(wins - {training})
        out.append({**c, "admission": result, "beats_all_on": sorted(wins),
                    "discovery": training in wins and len(held_out) >= min_held_out,
                    "fresh_seeds": fresh_seeds, "settings": settings})
    return out


def discovery_ideas(template, profile, found: list[dict], run_id: str) -> list[dict]:
    """Confirmed discoveries as ideas in the ideation's JSON shape (the template's own idea text, rendered from the
    expression by its formula language), each with a paragraph on where it came from: its admission (fresh seeds,
    Holm-corrected p against every baseline per setting) and how much the search's own selection biased its
    training-setting fitness (its fitness on the search seeds against its mean on fresh seeds, same setting and
    budget)."""
    from jaxlib_kernels import symbolic
    from jaxlib_kernels.search.candidates import Candidate
    from tasks.runtime.runfolder import json_safe

    language = template.discovery.language
    used = set(template.baselines)
    known = {n: language.behaviour(b.expression) for n, b in template.baselines.items() if b.expression is not None}
    ideas = []
    for a in found:
        mine = language.behaviour(a["expr"])
        nearest = min(known, key=lambda n: language.distance(mine, known[n]))
        parent = a["origin"].split("+")[0]
        cand = Candidate(a["expr"], parent if parent in template.baselines else nearest,
                         mutations=[f"found by scientist discover ({a['origin']})"])
        idea = language.render_idea(template, profile, cand, language.distance(mine, known[nearest]), nearest,
                                    float(a["fitness"]), used)
        used.discard(idea["Name"])
        name, k = f"discovered_{nearest}", 2
        while name in used:
            name, k = f"discovered_{nearest}_{k}", k + 1
        used.add(name)
        idea["Name"], idea["Title"] = name, f"Discovered: {idea['Title'][0].lower()}{idea['Title'][1:]}"
        training = a["settings"][0]
        tests = a["admission"]["tests"]
        fresh = next(t["mean"] for t in tests if t["setting"] == training)
        lines = "; ".join(f"{t['setting']} vs {t['baseline']}: {t['mean']:.3f} against {t['baseline_mean']:.3f}, "
                          f"Holm p = {t['p_holm']:.2g}" for t in tests)
        idea["Experiment"] += (
            f" This formula, {symbolic.dumps(a['expr'])}, was found by the symbolic search of discovery run {run_id} "
            f"and confirmed on {a['fresh_seeds']} fresh seeds never used by the search (one-sided Welch tests, "
            f"Holm-corrected across settings and baselines): {lines}. Selection bias of the search: on the training "
            f"setting its fitness on the search seeds was {a['fitness']:.3f} against {fresh:.3f} on fresh seeds "
            f"({a['fitness'] - fresh:+.3f}), so the search's own training-setting figures overstate it by that much; "
            f"the held-out settings were never searched on.")
        idea["discovery"] = {"run_id": run_id, "origin": a["origin"], "search_fitness": float(a["fitness"]),
                             "fresh_training_mean": float(fresh),
                             "selection_bias": float(a["fitness"] - fresh), "beats_all_on": a["beats_all_on"],
                             "fresh_seeds": a["fresh_seeds"],
                             "iqm": {k: v["iqm"] for k, v in a["admission"]["iqm"].items()}}
        ideas.append(json_safe(idea))  # an idea travels as JSON between stages
    return ideas


# ---- Prefect tasks (cached: a resumed search repeats nothing) ------------------------------------------------------

generation_task = stage(name="discovery_generation", modules=ENGINE)(generation)
llm_proposals_task = stage(name="discovery_llm_proposals",
                           modules=("tasks.llm.discovery", "tasks.llm.prompting", "tasks.runtime.llm",
                                    "jaxlib_kernels.symbolic"),
                           paths=("prompts/llm/discovery.j2", "prompts/llm/system.j2", "prompts/llm/json_feedback.j2"),
                           template_parts=("llm",))(llm_proposals)
baseline_tuning_task = stage(name="discovery_baseline_tuning", modules=ENGINE)(baseline_tuning)
admission_task = stage(name="discovery_admission", modules=ENGINE)(admission)
