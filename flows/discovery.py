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

from jaxlib_kernels.templates import DEFAULT
from tasks.discovery import (
    admission_task,
    baseline_tuning_task,
    discovery_ideas,
    generation_task,
    llm_proposals_task,
)
from tasks.runtime.artifacts import Progress
from tasks.runtime.caching import storage
from tasks.runtime.runfolder import write_json

__all__ = ["discover", "discovery_ideas"]


@flow(name="discovery", log_prints=True)
def discover(template: str = DEFAULT, minutes: float = 10.0, run_id: str | None = None, runs_dir: str = "runs",
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
    if spec.language.name != "drift" and (model or distill):
        raise ValueError(f"--model and --distill serve drift formulas; {template!r} searches {spec.language.name} "
                         f"trees")
    setting = setting or spec.setting
    budget = budget or spec.budget
    tpl.setting(setting)  # an unknown setting fails here, with the template's settings
    logger = get_run_logger()
    config = discovery.SearchConfig(**(search or {}))
    variables = spec.language.variables  # for LaTeX
    with RunSession(runs_dir, run_id, id_prefix=f"discover-{template}", kind="discovery",
                    failed_status=RunStatus.INTERRUPTED, record_error=False, template=template,
                    search={**dataclasses.asdict(config), "language": spec.language.name}, setting=setting,
                    budget=budget, seeds=seeds, model=model, backend="llm" if model else "offline") as session:
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
                                     config, spec.language)
        g = 0
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
