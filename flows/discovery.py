"""The discovery flow (``scientist discover``): a symbolic search whose fitness is real training (PPO on ``lpo``'s
gridworlds, IPPO / MAPPO on ``marl``'s JaxMARL tasks, the tiny LM's preference training on ``dpo``'s tasks: any
template that declares ``Template.discovery``), then a statistically gated admission on fresh seeds.

Generations (``jaxlib_kernels.discovery.generation``: propose, static gate, novelty rejection, evosax-tuned
constants, one compiled evaluation of the whole population, successive halving, islands) run one cached Prefect
task each; the state after each is also written to ``search/gen_<g>.json``. Re-running a run id re-enters the loop
and every finished generation is a cache hit (same inputs, same code), so a killed search continues from its last
finished generation with identical results. With a model (``--model``, any litellm id) each generation first asks it
for formulas (``llm_proposals_task``, cached too, so a resumed search asks nothing again), with the archive's best
formulas and their real fitness in the prompt as DiscoPOP does; they join the mutations' proposals and pass the same
gate and novelty check. ``minutes`` bounds the search's wall time (finished generations of a
resumed run cost nothing). Progress goes to the flow's log, ``run.json`` and a ``discovery-progress`` artifact (with a
line on a terminal) after every generation.

Admission (``admission_task``): the baselines' own constants are first tuned with the search's constant-tuning budget
(``baseline_tuning_task``, ``baseline_tuning.json``); then the best formulas and the tuned baselines are trained again on ``fresh_seeds`` seeds never
used by the search, on the training setting and the held-out ones, in one compiled call per setting. For each
(setting, baseline) a one-sided Welch test; Holm-Bonferroni across every (setting, baseline) pair of a candidate;
the interquartile mean (rliable's ``aggregate_iqm``) with stratified bootstrap 95% intervals beside the mean. A candidate is a
discovery when it beats every baseline on the training setting and on at least ``min_held_out`` held-out settings
at corrected p < ``alpha``. The training-setting numbers are biased upward by the search's own selection; the
held-out settings and fresh seeds are what the gate relies on.
"""

from __future__ import annotations

import dataclasses
import os
import time

from prefect import flow, get_run_logger

from tasks.runtime.caching import stage, storage
from tasks.runtime.runfolder import write_json

KERNEL = ("jaxlib_kernels.discovery", "jaxlib_kernels.interpreter", "jaxlib_kernels.ppo", "jaxlib_kernels.symbolic",
          "jaxlib_kernels.envs", "jaxlib_kernels.templates.lpo.search", "jaxlib_kernels.templates.lpo.kernel",
          "jaxlib_kernels.es.meta")
FRESH_SEED_OFFSET = 10_000  # admission seeds start here; the search uses 0 .. 2 * seeds


@stage(name="discovery_generation", modules=KERNEL)
def generation_task(state: dict, search: dict, seed: int, template_name: str, setting: str, budget: int, seeds: int,
                    ppo_overrides: dict | None, distill_target: list[float] | None = None, workers: int = 0,
                    ray_address: str | None = None) -> dict:
    """One generation of the search (a pure function of its inputs, the template's code among them: cached, so a
    resumed search repeats nothing); with ``distill_target`` the fitness is the closeness to that learned drift
    instead of the trained return; with ``workers`` > 1 the population is trained in that many equal shards on Ray
    actors at once."""
    from jaxlib_kernels import discovery
    from jaxlib_kernels.templates import make

    config = discovery.SearchConfig(**search)
    template = make(template_name)
    evaluate = (discovery.distillation_evaluator(distill_target) if distill_target is not None else
                discovery.training_evaluator(template, template.setting(setting), budget, seeds, config,
                                             ppo_overrides, train=_sharded(template_name, workers, ray_address)))
    start = time.time()
    out = discovery.generation(state, config, evaluate, seed)
    out["log"][-1]["seconds"] = time.time() - start
    return out


@stage(name="discovery_llm_proposals", modules=("tasks.llm_stages", "tasks.runtime.llm", "jaxlib_kernels.symbolic"),
       paths=("prompts/llm/discovery.j2", "prompts/llm/system.j2", "prompts/llm/json_feedback.j2"),
       template_parts=("llm",))
def llm_proposals_task(template_name: str, model: str, generation: int, archive_rows: list[dict], n: int,
                       max_size: int, fallback: bool) -> dict:
    """The model's formulas for one generation (cached: a resumed search asks the model nothing again). With
    ``fallback`` a model that keeps failing gives no proposal, and the reason, instead of failing the search."""
    from jaxlib_kernels.templates import make
    from tasks import llm_stages
    from tasks.runtime import llm

    try:
        out = llm_stages.propose_formulas(llm.active(model), make(template_name), archive_rows, n, generation,
                                          max_size)
    except llm.BudgetExceeded:
        raise
    except llm.LLMError as exc:
        if not fallback:
            raise
        return {"proposals": [], "rejected": [], "fallback": llm.redact(exc)}
    return {**out, "fallback": None}


def _sharded(template_name: str, workers: int, ray_address: str | None):
    """``train`` for ``discovery.training_evaluator``: None (one compiled call in this process) or the Ray shards."""
    if workers <= 1:
        return None
    import functools

    from tasks.runtime import ray_pool

    return functools.partial(ray_pool.train_programs_sharded, ray_pool.program_trainers(workers, ray_address),
                             template_name)


@stage(name="discovery_baseline_tuning", modules=KERNEL)
def baseline_tuning_task(template_name: str, baselines: dict[str, object], search: dict, seed: int, setting: str,
                         budget: int, seeds: int, ppo_overrides: dict | None, generations: int, workers: int = 0,
                         ray_address: str | None = None) -> dict:
    """The baselines' constants tuned with the search's own constant-tuning budget (cached)."""
    from jaxlib_kernels import discovery
    from jaxlib_kernels.templates import make

    config = discovery.SearchConfig(**search)
    template = make(template_name)
    evaluate = discovery.training_evaluator(template, template.setting(setting), budget, seeds, config,
                                            ppo_overrides, train=_sharded(template_name, workers, ray_address))
    return discovery.tune_baselines(baselines, config, evaluate, generations, seed)


def _stratified_bootstrap(scores, aggregate, reps: int = 2000, seed: int = 0) -> list[float]:
    """rliable's stratified bootstrap (seeds resampled within each setting), percentile 95% interval.

    ``rliable.library.get_interval_estimates`` does this through ``arch``, which fails to import with this
    environment's pandas 3 (arch 7) or rejects rliable's ``random_state`` (arch 8), so the resampling is written here
    and the aggregate is rliable's own ``metrics.aggregate_iqm``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = np.array([aggregate(np.take_along_axis(scores, i, axis=0)) for i in idx])
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def _stats(scores, baselines: dict, alpha: float) -> dict:
    """Welch tests (candidate > baseline, one-sided), Holm across the (setting, baseline) pairs, IQM with rliable."""
    import numpy as np
    from rliable import metrics  # rliable.library needs arch, whose releases do not import with pandas 3 here
    from scipy import stats

    tests = []
    for setting, cand in scores.items():
        for name, base in baselines[setting].items():
            t = stats.ttest_ind(cand, base, equal_var=False, alternative="greater")
            tests.append({"setting": setting, "baseline": name, "mean": float(np.mean(cand)),
                          "baseline_mean": float(np.mean(base)), "t": float(t.statistic), "p": float(t.pvalue)})
    # Holm-Bonferroni
    order = np.argsort([t["p"] for t in tests])
    m, running = len(tests), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * tests[i]["p"]))
        tests[i]["p_holm"] = running
        tests[i]["significant"] = running < alpha
    settings = list(scores)
    matrix = {"candidate": np.stack([scores[s] for s in settings], axis=1)}
    for name in next(iter(baselines.values())):
        matrix[name] = np.stack([baselines[s][name] for s in settings], axis=1)
    iqm = {k: {"iqm": float(metrics.aggregate_iqm(v)), "ci95": _stratified_bootstrap(v, metrics.aggregate_iqm),
               "mean": float(np.mean(v))} for k, v in matrix.items()}
    return {"tests": tests, "iqm": iqm}


@stage(name="discovery_admission", modules=KERNEL)
def admission_task(template_name: str, candidates: list[dict], baselines: dict[str, object], settings: list[str],
                   training: str, budget: int, fresh_seeds: int, ppo_overrides: dict | None, alpha: float,
                   min_held_out: int, length: int, population: int) -> list[dict]:
    """Re-train the candidates and baselines on fresh seeds and gate them (see the module docstring)."""

    import numpy as np

    from jaxlib_kernels import interpreter
    from jaxlib_kernels.templates import make

    template = make(template_name)
    exprs = [c["expr"] for c in candidates] + list(baselines.values())
    exprs += [exprs[0]] * (-len(exprs) % population)  # the search's population shape: its compiled program fits
    seeds = list(range(FRESH_SEED_OFFSET, FRESH_SEED_OFFSET + fresh_seeds))
    finals = {}
    for s in settings:
        setting = template.setting(s)
        overrides = dict(ppo_overrides or {})
        steps = int(overrides.pop("total_timesteps", budget) * setting.budget_scale)
        config = dataclasses.replace(template.kernel_config(setting, steps), **overrides)
        # (candidates + baselines, seeds)
        programs = interpreter.encode_population(exprs, length, template.discovery.language)
        finals[s] = np.asarray(template.discovery.train_programs(config, programs, seeds))
    out = []
    for i, c in enumerate(candidates):
        scores = {s: finals[s][i] for s in settings}
        base = {s: {name: finals[s][len(candidates) + j] for j, name in enumerate(baselines)} for s in settings}
        result = _stats(scores, base, alpha)
        wins = {s for s in settings if all(t["significant"] for t in result["tests"] if t["setting"] == s)}
        held_out = sorted(wins - {training})
        out.append({**c, "admission": result, "beats_all_on": sorted(wins),
                    "discovery": training in wins and len(held_out) >= min_held_out,
                    "fresh_seeds": fresh_seeds, "settings": settings})
    return out


@flow(name="discovery", log_prints=True)
def discover(template: str = "lpo", minutes: float = 10.0, run_id: str | None = None, runs_dir: str = "runs",
             generations: int | None = None, search: dict | None = None, seed: int = 0, setting: str | None = None,
             budget: int | None = None, seeds: int = 2, ppo_overrides: dict | None = None, fresh_seeds: int = 16,
             admit_top: int = 2, held_out: list[str] | None = None, alpha: float = 0.05, min_held_out: int = 2,
             admit: bool = True, model: str | None = None, llm_proposals: int = 4, max_cost: float | None = None,
             fallback: bool = True, baseline_tuning: int | None = None, distill: str | None = None,
             workers: int = 0, ray_address: str | None = None, paper: bool = True,
             paper_profile: str = "default") -> dict:
    """Search for a drift formula for ``minutes`` (or ``generations``), then gate the best ``admit_top`` of it.

    ``template`` is any template that declares ``Template.discovery`` (``lpo``, ``marl``, ``dpo``); ``setting``,
    ``budget`` and ``held_out`` default to its declaration, ``ppo_overrides`` replace fields of its kernel
    configuration (``PPOConfig``, ``MARLConfig``, ``DPOConfig``).

    With ``model`` (a litellm id) each generation also trains ``llm_proposals`` formulas the model proposes from the
    archive's best formulas and their fitness; they go through the same gate and novelty check as the mutations.
    A generation whose model call fails goes on with the mutations alone (recorded in ``run.json``'s
    ``fallbacks``) unless ``fallback`` is False; when ``max_cost`` (USD) is spent the search goes on without it.

    Before admission the baselines' own constants are tuned with the budget the search spent on its candidates'
    constants (``baseline_tuning`` evosax steps; default: as many as the search's generations that tuned; 0: none),
    and the candidates are gated against the tuned baselines, so a discovery is never a retuned baseline constant
    measured against an untuned baseline.

    With ``distill`` (the folder of a ``scientist meta --template lpo`` run) the search distills that run's learned
    TA-LPO drift into a formula: the fitness of a formula is minus its behavioural distance to the learned drift on
    the probe grid (nothing is trained during the search), and the closest formulas are then confirmed by the same
    admission on fresh seeds as any candidate. The search tuned no constant for return, so the baselines are not
    tuned either unless ``baseline_tuning`` says so.

    ``workers`` > 1 shards each generation's population (and the baseline tuning's) over that many Ray actors
    (``ray_address``, else ``RAY_ADDRESS``, else a local Ray), capped at the cluster's GPUs, else CPUs; each actor
    asks for one CPU, or a GPU fraction (``SCIENTIST_GPU_FRACTION``) where the cluster has GPUs. The admission's
    retraining stays one compiled call per setting in the flow's process.

    With ``paper`` (default) the confirmed discoveries then go through the generic per-idea stages, as ideas of an
    AI-Scientist run ``<run id>-paper`` on ``paper_profile`` (its settings, seeds and budget; novelty, the gate,
    experiments, plots, a paper and a review, the archive): ``discovery_ideas`` writes each as an idea whose text
    gives its admission and the selection bias of its search fitness."""
    from jaxlib_kernels import discovery, symbolic
    from jaxlib_kernels.templates import make
    from tasks.runtime.session import RunSession, RunStatus

    tpl = make(template)
    if tpl.discovery is None:
        from jaxlib_kernels.templates import discovery_templates

        raise ValueError(f"the discovery engine serves templates whose plug-in is an elementwise formula "
                         f"({', '.join(discovery_templates())}); {template!r} declares no Template.discovery")
    spec = tpl.discovery
    if spec.language != "drift" and (model or distill):
        raise ValueError(f"--model and --distill serve drift formulas; {template!r} searches {spec.language} trees")
    setting = setting or spec.setting
    budget = budget or spec.budget
    tpl.setting(setting)  # an unknown setting fails here, with the template's settings
    logger = get_run_logger()
    config = discovery.SearchConfig(**{**(search or {}), "language": spec.language})
    variables = getattr(discovery.language_search(spec.language), "VARIABLES", None)  # for LaTeX (None: lpo's)
    with RunSession(runs_dir, run_id, id_prefix=f"discover-{template}", kind="discovery",
                    failed_status=RunStatus.INTERRUPTED, record_error=False, template=template,
                    search=dataclasses.asdict(config), setting=setting, budget=budget, seeds=seeds, model=model,
                    backend="llm" if model else "offline") as session:
        run, t0 = session.run, session.t0
        client = session.start_llm(model, max_cost) if model else None
        if workers > 1:
            from tasks.runtime import ray_pool

            session.on_close(ray_pool.release_program_trainers)
            workers = min(workers, ray_pool.available_workers(ray_address))
            run.update_run_json(workers=workers, ray_address=ray_address or os.environ.get("RAY_ADDRESS"))
        target = None
        if distill:
            from jaxlib_kernels.es.problems import learned_behaviour

            learned = learned_behaviour(distill)
            target = learned["target"]
            run.update_run_json(distill={"from": str(distill), "generation": learned["generation"],
                                         "baseline_distances": learned["distances"]})
            logger.info("distilling the TA-LPO drift of %s (ES generation %d); its distance to the baselines: %s",
                        distill, learned["generation"],
                        ", ".join(f"{k} {v:.3f}" for k, v in learned["distances"].items()))
        fallbacks: list[dict] = []
        store = {"result_storage": storage(run.results_store)}
        folder = run.path / "search"
        folder.mkdir(parents=True, exist_ok=True)
        state = discovery.init_state({n: b.expression for n, b in tpl.baselines.items() if b.expression is not None},
                                     config)
        g = 0
        from tasks.runtime.artifacts import Progress

        # generations done of those asked for, or (a search bounded by time only) seconds of its time budget
        progress = (Progress(generations, "discovery generations", key="discovery-progress") if generations
                    else Progress(int(60 * minutes), "discovery search (seconds of its budget)",
                                  key="discovery-progress"))
        while (generations is None or g < generations) and (time.time() - t0) < 60 * minutes:
            if client is not None and not client.ledger.exceeded:
                state = _with_llm_proposals(state, config, template, model, llm_proposals, fallback, store, fallbacks,
                                            logger)
                run.update_run_json(llm=client.ledger.to_dict(), fallbacks=fallbacks)
            state = generation_task.with_options(**store)(state, dataclasses.asdict(config), seed, template, setting,
                                                          budget, seeds, ppo_overrides, target, workers, ray_address)
            g = state["generation"]
            write_json(folder / f"gen_{g - 1:04d}.json", state)
            entry = state["log"][-1]
            logger.info("generation %d: %d trained (%d tuned, %d from the model), %d refused by the gate, %d as "
                        "duplicates; best %.3f (long rung %s) %s", g - 1, entry["trained"], entry["tuned"],
                        entry.get("from_llm", 0), entry["gate"], entry["novelty"], entry["best_fitness"],
                        entry["best_fitness_long"], entry["best"])
            run.update_run_json(generation=g, best=entry["best"], best_fitness=entry["best_fitness"],
                                best_fitness_long=entry["best_fitness_long"], wall_seconds=time.time() - t0)
            progress.update(g if generations else int(time.time() - t0))
        progress.update(progress.total)  # the search is over (its last generation, or its time is up)
        top = [{"expr": r["expr"], "origin": r["origin"], "fitness": r["fitness"], "fitness_long": r["fitness_long"],
                "formula": symbolic.to_latex(r["expr"], variables)}
               for r in discovery.best(state, admit_top, exclude=tpl.baselines)]  # even when a baseline leads
        admitted: list[dict] = []
        if admit and top:
            settings = [setting] + list(held_out if held_out is not None else
                                        [s for s in spec.held_out if s != setting])
            baselines = {name: tpl.baselines[name].expression for name in spec.baselines}
            steps = baseline_tuning if baseline_tuning is not None else (
                0 if distill else discovery.tuning_generations(state))
            tuning = baseline_tuning_task.with_options(**store)(template, baselines, dataclasses.asdict(config), seed,
                                                                setting, budget, seeds, ppo_overrides, steps,
                                                                workers, ray_address)
            write_json(run.path / "baseline_tuning.json", tuning)
            run.update_run_json(baseline_tuning={n: {k: t[k] for k in ("constants", "start_constants", "fitness",
                                                                        "start_fitness", "generations", "evaluated")}
                                                 for n, t in tuning.items()})
            for n, t in tuning.items():
                logger.info("baseline %s tuned over %d evosax steps: constants %s -> %s, fitness %.3f -> %.3f", n,
                            t["generations"], t["start_constants"], t["constants"], t["start_fitness"], t["fitness"])
            baselines = {n: t["expr"] for n, t in tuning.items()}
            admitted = admission_task.with_options(**store)(template, top, baselines, settings, setting, budget,
                                                            fresh_seeds, ppo_overrides, alpha, min_held_out,
                                                            config.length, config.population)
            write_json(run.path / "admission.json", admitted)
            for a in admitted:
                logger.info("admission %s: discovery=%s, beats %s on %s", symbolic.dumps(a["expr"]), a["discovery"],
                            " and ".join(baselines), a["beats_all_on"] or "no setting")
        paper_run = None
        found = [a for a in admitted if a["discovery"]]
        if paper and found:
            from flows.scientist import ai_scientist

            ideas = discovery_ideas(tpl, tpl.profile(paper_profile), found, run.run_id)
            logger.info("%d confirmed discover%s: writing them up in run %s-paper", len(found),
                        "y" if len(found) == 1 else "ies", run.run_id)
            paper_run = ai_scientist(template=template, profile=paper_profile, model=model, runs_dir=runs_dir,
                                     run_id=f"{run.run_id}-paper", ray_address=ray_address, given_ideas=ideas,
                                     num_ideas=len(ideas))
            run.update_run_json(paper_run={k: paper_run.get(k) for k in ("run_id", "status", "papers", "run_dir")})
        status = RunStatus.FINISHED
        more = {**session.llm_usage(), "fallbacks": fallbacks} if client is not None else {}
        session.finish(status, generation=g,
                       discoveries=[symbolic.dumps(a["expr"]) for a in admitted if a["discovery"]], **more)
        return {"run_id": run.run_id, "run_dir": str(run.path), "status": status, "generation": g, "state": state,
                "top": top, "admitted": admitted, "paper_run": paper_run}


def discovery_ideas(template, profile, found: list[dict], run_id: str) -> list[dict]:
    """Confirmed discoveries as ideas in the ideation's JSON shape (the template's own idea text, rendered from the
    expression), each with a paragraph on where it came from: its admission (fresh seeds, Holm-corrected p against
    every baseline per setting) and how much the search's own selection biased its training-setting fitness (its
    fitness on the search seeds against its mean on fresh seeds, same setting and budget)."""
    from jaxlib_kernels import discovery, symbolic
    from tasks.runtime.runfolder import json_safe

    search = discovery.language_search(template.discovery.language)
    used = set(template.baselines)
    known = {n: search.behaviour(b.expression) for n, b in template.baselines.items() if b.expression is not None}
    ideas = []
    for a in found:
        mine = search.behaviour(a["expr"])
        nearest = min(known, key=lambda n: search.distance(mine, known[n]))
        parent = a["origin"].split("+")[0]
        cand = search.Candidate(a["expr"], parent if parent in template.baselines else nearest,
                                mutations=[f"found by scientist discover ({a['origin']})"])
        idea = search.render_idea(template, profile, cand, search.distance(mine, known[nearest]), nearest,
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


def _with_llm_proposals(state: dict, config, template: str, model: str, n: int, fallback: bool, store: dict,
                        fallbacks: list[dict], logger) -> dict:
    """``state`` with the model's formulas for its generation added to the proposals waiting to be trained."""
    from jaxlib_kernels import discovery

    g = state["generation"]
    rows = [{"expr": r["expr"], "fitness": r["fitness"], "fitness_long": r["fitness_long"], "origin": r["origin"]}
            for r in discovery.best(state, 8)]
    from tasks.runtime import llm

    try:
        got = llm_proposals_task.with_options(**store)(template, model, g, rows, n, config.max_size, fallback)
    except llm.BudgetExceeded as exc:
        logger.warning("generation %d: the LLM budget is spent (%s); the search goes on with mutations only", g, exc)
        fallbacks.append({"generation": g, "stage": "discovery", "reason": f"budget spent: {exc}"})
        return state
    if got["fallback"]:
        logger.warning("generation %d: no formula from the model (%s); mutations only", g, got["fallback"])
        fallbacks.append({"generation": g, "stage": "discovery", "reason": got["fallback"]})
    for r in got["rejected"]:
        logger.info("generation %d: the model's %s was not a formula: %s", g, r["name"], r["reason"])
    pending = [{"expr": p["expr"], "origin": f"llm:{p['name']}", "island": i % config.islands}
               for i, p in enumerate(got["proposals"])]
    return {**state, "pending": list(state.get("pending") or []) + pending}
