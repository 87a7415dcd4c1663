"""The ES meta-learning flow (``scientist meta``): what it trains and how a run ends is the template's
``Template.meta`` (``jaxlib_kernels/templates/<name>/meta.py``; lpo: TA-LPO, Jackson et al., 2024; hades: HaDES,
Lupu et al., 2024).

Generations run as checkpointed, cached chunks (``tasks/meta_es.run_chunk_task``, one Prefect task per ``chunk``
generations; the evosax state goes to ``searches/<name>/gen_<g>.npz`` after each), the population evaluated on Ray
(``tasks/runtime/ray_pool.py``: one compiled ``jit(vmap(fitness))`` per worker; the population split across
workers when there are several). Re-running a run id continues from the last checkpoint; finished chunks are cache
hits, not recomputed. At the end either the learned candidate becomes an idea that goes through the AI-Scientist's
per-idea stages (``flows/pipeline.py``: gate, experiments against the baselines over several seeds, aggregation,
plots, a paper and its review), or the template evaluates its searches itself; then the template's summary table.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from jaxlib_kernels.templates import DEFAULT
from tasks.runtime import artifacts
from tasks.runtime.caching import storage
from tasks.runtime.runfolder import RunFolder, read_json, write_json


def run_search(name: str, spec: dict, es: dict, seed: int, generations: int, chunk: int, run: RunFolder,
               workers: int, ray_address: str | None, max_chunks: int | None, store: dict,
               center_seeds: int = 0) -> dict:
    """Chunked ES search: one cached task per chunk, each starting from the previous chunk's checkpoint."""
    from tasks import meta_es
    from tasks.runtime import ray_pool

    folder = run.path / "searches" / name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "search.json", {"problem": spec, "es": es, "seed": seed, "generations": generations,
                                        "chunk": chunk})
    out, computed = None, 0
    progress = artifacts.Progress(generations, f"ES generations of {name}", key=f"es-progress-{name}")
    for start in range(0, generations, chunk):
        progress.update(start)
        if max_chunks is not None and computed >= max_chunks:
            ray_pool.release_evaluators(spec)
            return {"name": name, "dir": str(folder), "done": False, "generation": start,
                    "metrics": out["metrics"] if out else {}, "centers": out["centers"] if out else []}
        end = min(generations, start + chunk)
        out = meta_es.run_chunk_task.with_options(**store)(spec, es, seed, start, end, str(folder), workers,
                                                            ray_address, center_seeds)
        computed += bool(out["computed"])
    progress.update(generations)
    ray_pool.release_evaluators(spec)
    meta_es.write_curve(folder, out["metrics"], out["centers"])
    return {"name": name, "dir": str(folder), "done": True, "generation": generations, "metrics": out["metrics"],
            "centers": out["centers"]}


def _idea_end_to_end(run: RunFolder, template: str, search: dict, spec: dict, es: dict, generations: int,
                     request: dict, ray_address: str | None, store: dict) -> dict:
    """The learned candidate as an idea through the AI-Scientist flow's own per-idea stages (``flows/pipeline.py``)."""
    from flows import pipeline
    from jaxlib_kernels.templates import make
    from tasks import meta_es
    from tasks.backends import OfflineBackend

    tpl = make(template)
    declared = tpl.meta
    idea = declared.idea(spec, es, generations, search["metrics"])
    name = idea["Name"]
    idea_dir = run.idea_dir(name)
    cand = meta_es.meta_candidate_task.with_options(**store)(template, spec, search["dir"], str(idea_dir))
    idea["source"] = cand["source"]
    prof = declared.profile(spec, request)
    backend = OfflineBackend(store=store)
    ready = pipeline.implement(backend, tpl, run, [idea], [])
    if not ready:
        return {"idea": idea}
    figures = [*declared.figures(idea["source"], idea_dir / "figures"),
               read_json(run.path / "figures" / "es_fitness.json")]
    pipeline.evaluate_and_write(backend, tpl, prof, run, ready, ray_address, {},
                                labels={name: declared.label}, extra_figures={name: figures})
    if not idea.get("review"):
        idea["status"] = idea.get("status") if str(idea.get("status", "")).startswith("failed") else "paper failed"
    table = declared.table(idea, prof)
    write_json(run.path / f"{declared.name}_results.json", table)
    return {"idea": idea, "table": table}


@flow(name="meta-learning", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def meta_learning(
    template: str = DEFAULT,
    strategy: str = "OpenES",
    generations: int = 20,
    population: int = 16,
    run_id: str | None = None,
    runs_dir: str = "runs",
    ray_address: str | None = None,
    profile: str = "smoke",
    chunk: int = 5,
    workers: int | None = None,
    seed: int = 0,
    seeds: int | None = None,
    timesteps: int | None = None,
    env: str | None = None,
    dataset_sizes: list[int] | None = None,
    max_chunks: int | None = None,
    evaluate: bool = True,
    settings: list[str] | None = None,
    options: dict | None = None,
    es_options: dict | None = None,
    center_seeds: int = 8,
    widths: list[int] | None = None,
) -> dict:
    """ES meta-training of ``template`` (its ``Template.meta``: lpo, the TA-LPO drift; hades, synthetic datasets) and
    its evaluation.

    ``workers``: evaluators on Ray (default: the cluster's GPUs, else CPUs; 0 = in this process, no Ray).
    ``max_chunks``: compute at most this many chunks in this call, then stop (status ``paused``); rerun to go on.
    ``options`` / ``es_options``: overrides of the problem spec / ES config (the template's ``Meta.defaults``).
    ``center_seeds``: after every chunk the search centre is evaluated on this many fixed seeds (0: never).
    ``profile``, ``seeds``, ``timesteps``, ``settings``, ``env``, ``dataset_sizes``, ``widths``: read by the templates
    that accept them (``Meta.options``; hades' ``widths``: the policy widths a learned dataset is transferred to).
    """
    from jaxlib_kernels.es import problems
    from jaxlib_kernels.es.figures import plot_fitness
    from tasks import meta_es
    from tasks.runtime import ray_pool
    from tasks.runtime.session import RunSession, RunStatus

    declared = problems.meta_of(template)
    es = problems.es_spec(template, strategy, population, **(es_options or {}))
    request = {"seed": seed, "options": options or {}, "timesteps": timesteps, "profile": profile, "seeds": seeds,
               "settings": settings, "env": env, "dataset_sizes": dataset_sizes, "widths": widths}
    with RunSession(runs_dir, run_id, id_prefix=f"meta-{template}", kind="meta-learning", logger=get_run_logger(),
                    template=template, strategy=es["strategy"], generations=generations, population=population,
                    chunk=chunk, ray_address=ray_address or os.environ.get("RAY_ADDRESS")) as session:
        run = session.run
        print(f"meta-run {run.run_id} ({'resumed' if session.resumed else 'new'}) in {run.path}")
        store = {"result_storage": storage(run.results_store)}
        if workers is None:
            workers = min(ray_pool.available_workers(ray_address), max(1, population // 2))
        specs = declared.searches(request)
        searches, paused = {}, False
        try:
            for name, spec in specs.items():
                searches[name] = run_search(name, spec, es, seed, generations, chunk, run, workers, ray_address,
                                            max_chunks, store, center_seeds)
                paused = paused or not searches[name]["done"]
        finally:
            ray_pool.release_evaluators()  # free the Ray CPUs for the experiment units
        run.update_run_json(searches={n: {"dir": s["dir"], "generation": s["generation"]} for n, s in searches.items()})
        if paused:
            session.finish(RunStatus.PAUSED)
            print(f"paused after {max_chunks} chunk(s); re-run with --run-id {run.run_id} to continue")
            return {"run_id": run.run_id, "run_dir": str(run.path), "status": "paused",
                    "generation": {n: s["generation"] for n, s in searches.items()}}
        fig = plot_fitness({n: s["metrics"] for n, s in searches.items()}, run.path / "figures",
                           centers={n: s["centers"] for n, s in searches.items()})
        write_json(run.path / "figures" / "es_fitness.json", fig)
        result = {"run_id": run.run_id, "run_dir": str(run.path), "status": "completed",
                  "generation": {n: s["generation"] for n, s in searches.items()},
                  "fitness": {n: {k: s["metrics"][k][-1] for k in ("return_mean", "return_max", "best_return")}
                              | {"first_mean": s["metrics"]["return_mean"][0], "centers": [
                                  (c["generation"], sum(c["returns"]) / len(c["returns"])) for c in s["centers"]]}
                              for n, s in searches.items()}}
        if evaluate:
            if declared.idea is not None:  # the learned candidate becomes an idea: the per-idea stages
                [(name, search)] = searches.items()
                out = _idea_end_to_end(run, template, search, specs[name], es, generations, request, ray_address,
                                       store)
                idea = out["idea"]
                write_json(run.ideas_json, [idea])
                result |= {"table": out.get("table"), "paper": (idea.get("paper") or {}).get("pdf"),
                           "decision": (idea.get("review") or {}).get("Decision"),
                           "overall": (idea.get("review") or {}).get("Overall"), "idea_status": idea.get("status")}
            else:  # the template evaluates its searches itself
                info = {n: {"dir": s["dir"], "problem": specs[n]} for n, s in searches.items()}
                out = meta_es.meta_evaluate_task.with_options(**store)(template, info, request,
                                                                       str(run.path / "figures"))
                out = {k: v for k, v in out.items() if k != "figures"}
                write_json(run.path / f"{declared.name}_results.json", out)
                result[template] = out
            text = declared.summary(out, request)
            (run.path / "summary.md").write_text(f"# {declared.title} meta-run {run.run_id}\n\n{text}\n")
            artifacts.markdown(key=f"meta-{declared.name}", markdown=text,
                               description=f"{declared.description}, {run.run_id}")
            print(text)
        session.finish(RunStatus.COMPLETED, result={k: v for k, v in result.items() if k != template})
        return result
