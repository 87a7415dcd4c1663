"""The ES meta-learning flow (``scientist meta``): TA-LPO (Jackson et al., 2024) and HaDES (Lupu et al., 2024).

Generations run as checkpointed, cached chunks (``tasks/meta_es.run_chunk_task``, one Prefect task per ``chunk``
generations; the evosax state goes to ``searches/<name>/gen_<g>.npz`` after each), the population evaluated on Ray
(one compiled ``jit(vmap(fitness))`` per worker; the population split across workers when there are several).
Re-running a run id continues from the last checkpoint; finished chunks are cache hits, not recomputed.

- ``lpo``: meta-train the TA-LPO drift MLP with ES on one navix grid, render the learned drift as plug-in source
  with its weights as literal constants (it passes the lpo validation gate like any candidate), then the
  AI-Scientist stages on it: PPO-clip vs learned drift on the training grid, held-out grids and shorter / longer
  horizons over several seeds (``tasks/experiments``), aggregation with 95% CIs and Welch tests, plots (plus
  the learned drift over r, A and n/N), a paper and its review.
- ``hades``: one HaDES-R dataset per dataset size, plus the direct-parameter OpenES baseline with the same ES and
  budget; fresh-policy returns with 95% CIs per size, transfer to other policy widths, plots of the datasets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.runtime.caching import stage, storage
from tasks.runtime.runfolder import RunFolder, git_revision, new_run_id, package_versions, read_json, write_json

LPO_SETTINGS = ("empty5", "empty_random5", "empty6", "empty5_short", "empty5_long")
HADES_WIDTHS = (16, 32, 64, 128, 256)
IDEA_NAME = "talpo_learned"


def run_search(name: str, spec: dict, es: dict, seed: int, generations: int, chunk: int, run: RunFolder,
               workers: int, ray_address: str | None, max_chunks: int | None, store: dict,
               center_seeds: int = 0) -> dict:
    """Chunked ES search: one cached task per chunk, each starting from the previous chunk's checkpoint."""
    from tasks import meta_es

    folder = run.path / "searches" / name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "search.json", {"problem": spec, "es": es, "seed": seed, "generations": generations,
                                        "chunk": chunk})
    from tasks.runtime.artifacts import Progress

    out, computed = None, 0
    progress = Progress(generations, f"ES generations of {name}", key=f"es-progress-{name}")
    for start in range(0, generations, chunk):
        progress.update(start)
        if max_chunks is not None and computed >= max_chunks:
            meta_es.release_evaluators(spec)
            return {"name": name, "dir": str(folder), "done": False, "generation": start,
                    "metrics": out["metrics"] if out else {}, "centers": out["centers"] if out else []}
        end = min(generations, start + chunk)
        out = meta_es.run_chunk_task.with_options(**store)(spec, es, seed, start, end, str(folder), workers,
                                                            ray_address, center_seeds)
        computed += bool(out["computed"])
    progress.update(generations)
    meta_es.release_evaluators(spec)
    meta_es.write_curve(folder, out["metrics"], out["centers"])
    return {"name": name, "dir": str(folder), "done": True, "generation": generations, "metrics": out["metrics"],
            "centers": out["centers"]}


@stage(name="talpo_candidate", modules=("jaxlib_kernels.es.talpo", "jaxlib_kernels.es.problems"))
def talpo_candidate_task(spec: dict, search_dir: str, idea_dir: str) -> dict:
    """Render the learned drift (the ES search mean) as plug-in source; the pipeline's gate checks it next."""
    import jax

    from jaxlib_kernels.es import problems, talpo
    from tasks import meta_es

    net = problems.drift_net(spec)
    like = talpo.init_drift_params(jax.random.key(0), net)
    theta = meta_es.load_candidate(search_dir, like)
    source = talpo.render_source(theta, net)
    Path(idea_dir).mkdir(parents=True, exist_ok=True)
    return {"source": source}


def _idea(spec: dict, es: dict, generations: int, curve: dict) -> dict:
    net = f"{spec['layers']} tanh layer(s) of {spec['hidden']} units"
    feats = "the LPO features of (r, A) and the same features times n/N" if spec["temporal"] else "the LPO features"
    first, last = curve["return_mean"][0], curve["return_mean"][-1]
    return {
        "Name": IDEA_NAME,
        "Title": "A temporally-aware drift meta-learned by evolution strategies",
        "Hypothesis": (f"A drift network ({net}, bias-free, ReLU output, over {feats}) meta-trained by "
                       f"{es['strategy']} on {spec['setting']} at a horizon of {spec['total_timesteps']} steps matches "
                       "or beats PPO's clip on held-out grids and on shorter and longer horizons."),
        "Experiment": (f"ES meta-training: {generations} generations of {es['population_size']} candidates (population "
                       f"mean return {first:.3f} in the first generation, {last:.3f} in the last); then PPO with the "
                       "learned drift against PPO clip, same seeds, on the training grid and held-out settings."),
        "expression_latex": r"\mathrm{ReLU}\big(w_{\mathrm{out}}^{\top}\tanh(W^{\top}\phi(r, A, n/N))\big)",
        "Interestingness": 7, "Feasibility": 8, "Novelty": 6,
        "kind": "source",  # an ES-learned parametric drift, rendered as source with its weights as constants
        "origin": "es",
        "temporal": bool(spec["temporal"]),
        "novelty": {"decision": "novel", "reason": "a parametric candidate found by ES, not by the symbolic search",
                    "nearest": "ppo_clip", "distance": None, "literature": []},
    }


def _lpo_end_to_end(run: RunFolder, search: dict, spec: dict, es: dict, generations: int, seeds: int,
                    settings: tuple[str, ...], ray_address: str | None, store: dict) -> dict:
    """The learned drift through the AI-Scientist flow's own per-idea stages (``flows/pipeline.py``)."""
    from flows import pipeline
    from jaxlib_kernels.templates import Profile, lpo
    from tasks import meta_es
    from tasks.backends import OfflineBackend

    idea = _idea(spec, es, generations, search["metrics"])
    idea_dir = run.idea_dir(IDEA_NAME)
    cand = talpo_candidate_task.with_options(**store)(spec, search["dir"], str(idea_dir))
    idea["source"] = cand["source"]
    steps = spec["total_timesteps"]
    prof = Profile("meta", num_ideas=1, seeds=seeds, budget=steps, settings=tuple(settings), baselines=("ppo_clip",))
    backend = OfflineBackend(store=store)
    ready = pipeline.implement(backend, lpo.TEMPLATE, run, [idea], [])
    if not ready:
        return {"idea": idea}
    figures = [meta_es.plot_learned_drift(idea["source"], idea_dir / "figures", "learned drift"),
               read_json(run.path / "figures" / "es_fitness.json")]
    pipeline.evaluate_and_write(backend, lpo.TEMPLATE, prof, run, ready, ray_address, {},
                                labels={IDEA_NAME: "TA-LPO, learned (ours)"}, extra_figures={IDEA_NAME: figures})
    if not idea.get("review"):
        idea["status"] = idea.get("status") if str(idea.get("status", "")).startswith("failed") else "paper failed"
    table = []
    for setting, info in (idea.get("final_info") or {}).items():
        comp = info.get("comparison", {})
        table.append({"setting": setting, "env": info.get("env"), "held_out": info["held_out"],
                      "steps": prof.budget_of(lpo.SETTINGS[setting]),
                      "learned_mean": info["means"].get(IDEA_NAME), "learned_ci95": info["ci95"].get(IDEA_NAME),
                      "ppo_clip_mean": info["means"].get("ppo_clip"), "ppo_clip_ci95": info["ci95"].get("ppo_clip"),
                      "difference": comp.get("difference"), "difference_ci95": comp.get("ci95"),
                      "p_value": comp.get("p_value"), "significant": comp.get("significant"),
                      "n": info["n"].get(IDEA_NAME)})
    write_json(run.path / "talpo_results.json", table)
    return {"idea": idea, "table": table}


def _fmt_ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


@stage(name="hades_evaluate")
def hades_evaluate_task(searches: dict[str, dict], eval_inits: int, widths: list[int], figures_dir: str) -> dict:
    """Fresh-policy returns (95% CI) of each learned dataset, its transfer across widths, the direct baseline's
    return over ``eval_inits`` episodes, and plots of the datasets."""
    import dataclasses as dc

    import jax
    import numpy as np

    from jaxlib_kernels.es import problems
    from jaxlib_kernels.templates import hades
    from tasks import aggregation, meta_es

    sizes, transfer, datasets, direct = {}, {}, {}, None
    eval_key = jax.random.key(1_000_003)  # never used by a search
    for name, info in searches.items():
        spec = info["problem"]
        config = problems.hades_config(spec)
        like = hades.initial_candidate(jax.random.key(0), config, spec["method"])
        cand = meta_es.load_candidate(info["dir"], like)
        if spec["method"] == "direct":
            fitness = hades.make_direct_fitness(dc.replace(config, eval_episodes=1))
            keys = jax.random.split(eval_key, eval_inits)
            values = np.asarray(jax.jit(jax.vmap(fitness, in_axes=(0, None)))(keys, cand))
            direct = {"name": name, **aggregation.summarize(values), "values": values.tolist()}
            continue
        values = hades.evaluate_dataset(eval_key, cand, config, num_inits=eval_inits)
        n = str(spec["num_pairs"])
        sizes[n] = {"name": name, **aggregation.summarize(values), "values": values.tolist(),
                    "solved_fraction": float(np.mean(values >= 0.9 * config.make_env().max_steps))}
        transfer[n] = {str(w): float(np.mean(hades.evaluate_dataset(eval_key, cand, config, eval_inits, w)))
                       for w in widths}
        labels = ["x", "x_dot", "theta", "theta_dot"] if spec["env"] == "CartPole-v1" else None
        datasets[n] = meta_es.plot_dataset(cand, Path(figures_dir), f"dataset_{n}_pairs", labels)
    figure = meta_es.plot_hades_summary(sizes, direct, transfer, Path(figures_dir)) if sizes else None
    return {"sizes": sizes, "transfer": transfer, "direct": direct, "figures": [figure, *datasets.values()]}


@flow(name="meta-learning", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def meta_learning(
    template: str = "lpo",
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
    """ES meta-training of ``template`` (lpo: the TA-LPO drift; hades: synthetic datasets) and its evaluation.

    ``workers``: evaluators on Ray (default: the cluster's GPUs, else CPUs; 0 = in this process, no Ray).
    ``max_chunks``: compute at most this many chunks in this call, then stop (status ``paused``); rerun to go on.
    ``options`` / ``es_options``: overrides of the problem spec / ES config (``jaxlib_kernels.es.problems``).
    ``center_seeds``: after every chunk the search centre is evaluated on this many fixed seeds (0: never).
    ``widths``: hades, the policy widths a learned dataset is transferred to (default 16, 32, 64, 128, 256).
    """
    from jaxlib_kernels.es import problems
    from jaxlib_kernels.templates import make as make_template
    from tasks import meta_es

    logger = get_run_logger()
    t0 = time.time()
    tpl = make_template(template) if template == "lpo" else None
    prof = tpl.profile(profile) if tpl else None
    es = problems.es_spec(template, strategy, population, **(es_options or {}))
    run = RunFolder(runs_dir, run_id or new_run_id(f"meta-{template}"))
    run.lock()
    resumed = run.exists()
    try:
        run.update_run_json(run_id=run.run_id, kind="meta-learning", template=template, strategy=es["strategy"],
                            generations=generations, population=population, chunk=chunk, status="running",
                            resumed=resumed, versions=package_versions(), git_revision=git_revision(),
                            ray_address=ray_address or os.environ.get("RAY_ADDRESS"), pid=os.getpid())
        print(f"meta-run {run.run_id} ({'resumed' if resumed else 'new'}) in {run.path}")
        store = {"result_storage": storage(run.results_store)}
        if workers is None:
            workers = min(meta_es.available_workers(ray_address), max(1, population // 2))
        specs: dict[str, dict] = {}
        if template == "lpo":
            steps = timesteps or prof.budget
            specs["talpo"] = problems.problem_spec("lpo", total_timesteps=steps, seed=seed, **(options or {}))
        else:
            sizes = dataset_sizes or [(options or {}).get("num_pairs", 4)]
            for n in sizes:
                specs[f"hades_r_{n}_pairs"] = problems.problem_spec(
                    "hades", **{**(options or {}), "env": env or (options or {}).get("env"), "num_pairs": n,
                                "seed": seed})
            specs["direct"] = problems.problem_spec("hades", **{**(options or {}), "env": env or (
                options or {}).get("env"), "method": "direct", "seed": seed})
        searches, paused = {}, False
        try:
            for name, spec in specs.items():
                searches[name] = run_search(name, spec, es, seed, generations, chunk, run, workers, ray_address,
                                            max_chunks, store, center_seeds)
                paused = paused or not searches[name]["done"]
        finally:
            meta_es.release_evaluators()  # free the Ray CPUs for the experiment units
        run.update_run_json(searches={n: {"dir": s["dir"], "generation": s["generation"]} for n, s in searches.items()})
        if paused:
            run.update_run_json(status="paused", wall_seconds=time.time() - t0)
            print(f"paused after {max_chunks} chunk(s); re-run with --run-id {run.run_id} to continue")
            return {"run_id": run.run_id, "run_dir": str(run.path), "status": "paused",
                    "generation": {n: s["generation"] for n, s in searches.items()}}
        fig = meta_es.plot_fitness({n: s["metrics"] for n, s in searches.items()}, run.path / "figures",
                                   centers={n: s["centers"] for n, s in searches.items()})
        write_json(run.path / "figures" / "es_fitness.json", fig)
        result = {"run_id": run.run_id, "run_dir": str(run.path), "status": "completed",
                  "generation": {n: s["generation"] for n, s in searches.items()},
                  "fitness": {n: {k: s["metrics"][k][-1] for k in ("return_mean", "return_max", "best_return")}
                              | {"first_mean": s["metrics"]["return_mean"][0], "centers": [
                                  (c["generation"], sum(c["returns"]) / len(c["returns"])) for c in s["centers"]]}
                              for n, s in searches.items()}}
        if evaluate and template == "lpo":
            n_seeds = seeds or prof.seeds
            out = _lpo_end_to_end(run, searches["talpo"], specs["talpo"], es, generations, n_seeds,
                                  tuple(settings or LPO_SETTINGS), ray_address, store)
            idea = out["idea"]
            write_json(run.ideas_json, [idea])
            result |= {"table": out.get("table"), "paper": (idea.get("paper") or {}).get("pdf"),
                       "decision": (idea.get("review") or {}).get("Decision"),
                       "overall": (idea.get("review") or {}).get("Overall"), "idea_status": idea.get("status")}
            lines = ["| setting | held out | steps | learned drift (95% CI) | PPO clip (95% CI) | difference (95% CI) | p |",
                     "|---|---|---:|---|---|---|---:|"]
            for r in out.get("table") or []:
                lines.append(f"| {r['setting']} | {r['held_out']} | {r['steps']} | {r['learned_mean']:.3f} "
                             f"{_fmt_ci(r['learned_ci95'])} | {r['ppo_clip_mean']:.3f} {_fmt_ci(r['ppo_clip_ci95'])} "
                             f"| {r['difference']:+.3f} {_fmt_ci(r['difference_ci95'])} | {r['p_value']:.3g} |")
            text = "\n".join(lines)
            (run.path / "summary.md").write_text(f"# TA-LPO meta-run {run.run_id}\n\n{text}\n")
            create_markdown_artifact(key="meta-talpo", markdown=text, description=f"TA-LPO vs PPO clip, {run.run_id}")
            print(text)
        elif evaluate and template == "hades":
            info = {n: {"dir": s["dir"], "problem": specs[n]} for n, s in searches.items()}
            widths = [int(w) for w in (widths or HADES_WIDTHS)]
            out = hades_evaluate_task.with_options(**store)(info, 16, widths, str(run.path / "figures"))
            write_json(run.path / "hades_results.json", {k: v for k, v in out.items() if k != "figures"})
            lines = ["| dataset | fresh-policy return (95% CI) | solved (>= 90% of max) | " +
                     " | ".join(f"width {w}" for w in widths) + " |",
                     "|---|---|---:|" + "---:|" * len(widths)]
            for n, s in out["sizes"].items():
                lines.append(f"| {n} pairs | {s['mean']:.1f} {_fmt_ci(s['ci95'])} | {s['solved_fraction']:.2f} | " +
                             " | ".join(f"{out['transfer'][n][str(w)]:.1f}" for w in widths) + " |")
            if out["direct"]:
                d = out["direct"]
                lines.append(f"| direct OpenES (same budget) | {d['mean']:.1f} {_fmt_ci(d['ci95'])} | | " +
                             " | ".join("" for _ in widths) + " |")
            text = "\n".join(lines)
            (run.path / "summary.md").write_text(f"# HaDES meta-run {run.run_id}\n\n{text}\n")
            create_markdown_artifact(key="meta-hades", markdown=text, description=f"HaDES, {run.run_id}")
            print(text)
            result |= {"hades": {k: v for k, v in out.items() if k != "figures"}}
        run.update_run_json(status="completed", wall_seconds=time.time() - t0,
                            result={k: v for k, v in result.items() if k not in ("hades",)})
        return result
    except BaseException as exc:
        run.update_run_json(status="failed", error=f"{type(exc).__name__}: {exc}", wall_seconds=time.time() - t0)
        logger.error("meta-run %s failed: %s", run.run_id, exc)
        raise
    finally:
        run.unlock()

