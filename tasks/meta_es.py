"""The ES meta-training stages of ``scientist meta`` (ARCHITECTURE.md sections 2 and 6): checkpointed chunks of a
search, the learned candidate as plug-in source, and the template's own evaluation at the end.

One chunk runs generations ``[start, end)`` of a search and leaves ``searches/<name>/gen_<end>.npz`` (the evosax
state and the metric history): the generations run through the one ES driver (:func:`jaxlib_kernels.es.meta.drive`)
with ask and tell jitted in the flow process and the population evaluated by the Ray pool
(``tasks/runtime/ray_pool.py``: one compiled ``jit(vmap(fitness))`` per worker, the population split into equal
shards, so every generation after the first reuses the same executables; ``workers=0`` evaluates in the flow
process, without Ray). Generation ``g`` uses ``fold_in(loop_key, g)`` exactly as :func:`meta.run_meta`, so a
chunked run equals an uninterrupted one and a stopped run resumes from its last checkpoint. Each computed chunk
appends a line to ``chunks.jsonl``; a chunk whose checkpoint already exists is read back, not recomputed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from prefect import get_run_logger

from tasks.runtime import ray_pool
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import write_json

_SEARCHES: dict[str, tuple] = {}
_LOCK = threading.Lock()


def _search(spec: dict, es: dict) -> tuple:
    """``(strategy, es_params, mean, fitness, ask, tell)`` of a search, built once per process."""
    from jaxlib_kernels.es import meta, problems

    key = json.dumps([spec, es], sort_keys=True)
    with _LOCK:
        if key not in _SEARCHES:
            fitness, mean = problems.make_problem(spec)
            strategy, es_params = meta.make_strategy(problems.es_config(es), mean)
            _SEARCHES[key] = (strategy, es_params, mean, fitness, *meta.make_ask_tell(strategy))
        return _SEARCHES[key]


def run_chunk(spec: dict, es: dict, seed: int, start: int, end: int, search_dir: str, workers: int = 1,
              ray_address: str | None = None, center_seeds: int = 0) -> dict:
    """Bring the search in ``search_dir`` from generation ``start`` to ``end``; host metrics of ``[0, end)``.

    With ``center_seeds`` the search centre is also evaluated on that many fixed keys after the chunk (and before
    it, for the first chunk): ``center_<g>.json``, and ``centers`` in the result."""
    import jax

    from jaxlib_kernels.es import meta

    folder = Path(search_dir)
    strategy, es_params, mean, fitness, ask, tell = _search(spec, es)
    done = meta.checkpoint_path(folder, end)
    init_key, loop_key = jax.random.split(jax.random.key(seed))
    fresh = meta.canonical_state(meta.init_state(init_key, strategy, es_params, mean, fitness,
                                                 es.get("shared_eval_key", True)))
    if done.exists():  # computed before (a resumed run whose task cache was lost): read it back
        _, _, history = meta.load_checkpoint(done, fresh)
        return {"start": start, "end": end, "computed": False, "centers": _read_centers(folder, end),
                "metrics": {k: np.asarray(v).tolist() for k, v in history.items()}}
    t0 = time.time()
    if start == 0:
        state, history = fresh, {}
    else:
        previous = meta.checkpoint_path(folder, start)
        if not previous.exists():
            raise FileNotFoundError(f"chunk {start}-{end} needs the checkpoint {previous}, which is missing")
        _, state, history = meta.load_checkpoint(previous, fresh)
    pool = ray_pool.evaluators(spec, workers, ray_address, es.get("shared_eval_key", True))
    if center_seeds and start == 0:
        write_json(folder / "center_000000.json", {"generation": 0, "returns": ray_pool.evaluate_center(
            pool, seed, meta.search_mean(strategy, state), center_seeds)})

    def evaluate(key, population):
        return ray_pool.evaluate_population(pool, np.asarray(jax.random.key_data(key)), population)

    state, history = meta.drive(meta.ask_tell_step(ask, evaluate, tell), state, es_params, start, end,
                                lambda g: jax.random.fold_in(loop_key, g), history)
    state = meta.canonical_state(state)
    meta.save_checkpoint(folder, end, state, {k: np.asarray(v) for k, v in history.items()})
    meta.save_candidate(folder / "search_mean.npz", meta.search_mean(strategy, state))
    meta.save_candidate(folder / "best.npz", meta.ravel_pytree(mean)[1](state.best_solution))
    if center_seeds:
        write_json(folder / f"center_{end:06d}.json", {"generation": end, "returns": ray_pool.evaluate_center(
            pool, seed, meta.search_mean(strategy, state), center_seeds)})
    stats = ray_pool.evaluator_stats(spec, workers, ray_address)
    record = {"start": start, "end": end, "seconds": time.time() - t0, "pid": os.getpid(), "workers": workers,
              "evaluator_traces": [s["traces"] for s in stats], "time": time.time()}
    with open(folder / "chunks.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    return {"start": start, "end": end, "computed": True, "seconds": record["seconds"],
            "evaluator_traces": record["evaluator_traces"], "centers": _read_centers(folder, end),
            "metrics": {k: np.asarray(v).tolist() for k, v in history.items()}}


def _read_centers(folder: Path, end: int) -> list[dict]:
    """The search-centre evaluations up to generation ``end``: ``[{"generation", "returns"}]``."""
    out = []
    for path in sorted(Path(folder).glob("center_*.json")):
        entry = json.loads(path.read_text())
        if entry["generation"] <= end:
            out.append(entry)
    return out


def write_curve(search_dir: str | Path, metrics: dict, centers: list[dict] | None = None) -> dict:
    """``fitness.csv`` and ``fitness.json`` (per generation: mean / max / best return, ...) in ``search_dir``, and
    ``center.csv`` (the search centre's mean return on fixed keys with its 95% CI, per checkpoint) when given."""
    import pandas as pd

    from jaxlib_kernels.stats import summarize

    folder = Path(search_dir)
    frame = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in metrics.items()})
    frame.insert(0, "generation", np.arange(1, len(frame) + 1))
    frame.to_csv(folder / "fitness.csv", index=False)
    data = {k: frame[k].tolist() for k in frame.columns}
    if centers:
        rows = []
        for c in centers:
            s = summarize(np.asarray(c["returns"]))
            rows.append({"generation": c["generation"], **{k: v for k, v in s.items() if k != "ci95"},
                         "ci95_low": s["ci95"][0], "ci95_high": s["ci95"][1]})
        pd.DataFrame(rows).to_csv(folder / "center.csv", index=False)
        data["center"] = rows
    write_json(folder / "fitness.json", data)
    return {"csv": str(folder / "fitness.csv"), "json": str(folder / "fitness.json")}


def learned_source(template_name: str, spec: dict, search_dir: str) -> str:
    """The search mean in ``search_dir`` rendered as the template's plug-in source (``Meta.render``)."""
    from jaxlib_kernels.es import meta, problems

    declared = problems.meta_of(template_name)
    return declared.render(meta.load_candidate(search_dir, declared.like(spec)), spec)


def evaluate_searches(template_name: str, searches: dict[str, dict], request: dict, figures_dir: str) -> dict:
    """The template's own evaluation of its finished searches (``Meta.evaluate``): ``searches`` maps a search name
    to ``{"dir", "problem"}``; each search mean is read back and passed as ``candidate``."""
    from jaxlib_kernels.es import meta, problems

    declared = problems.meta_of(template_name)
    info = {name: {"problem": s["problem"], "candidate": meta.load_candidate(s["dir"], declared.like(s["problem"]))}
            for name, s in searches.items()}
    return declared.evaluate(info, request, figures_dir)


# ---- stages -------------------------------------------------------------------------------------------------

_ES_MODULES = ("jaxlib_kernels.es.meta", "jaxlib_kernels.es.problems", "jaxlib_kernels.es.talpo")


@stage(name="es_chunk", retries=1, retry_delay_seconds=2)
def run_chunk_task(spec: dict, es: dict, seed: int, start: int, end: int, search_dir: str, workers: int = 1,
                   ray_address: str | None = None, center_seeds: int = 0) -> dict:
    """Prefect task over :func:`run_chunk`: cached on its inputs, so a rerun of the run id skips finished chunks."""
    out = run_chunk(spec, es, seed, start, end, search_dir, workers, ray_address, center_seeds)
    m = out["metrics"]
    get_run_logger().info("%s generations %d-%d: mean %.3f, max %.3f, best %.3f%s", Path(search_dir).name, start + 1,
                          end, m["return_mean"][-1], m["return_max"][-1], m["best_return"][-1],
                          f" ({out['seconds']:.1f} s)" if out["computed"] else " (from its checkpoint)")
    return out


@stage(name="meta_candidate", modules=_ES_MODULES)
def meta_candidate_task(template_name: str, spec: dict, search_dir: str, idea_dir: str) -> dict:
    """Render the learned candidate (the ES search mean) as plug-in source; the pipeline's gate checks it next."""
    source = learned_source(template_name, spec, search_dir)
    Path(idea_dir).mkdir(parents=True, exist_ok=True)
    return {"source": source}


@stage(name="meta_evaluate", modules=_ES_MODULES)
def meta_evaluate_task(template_name: str, searches: dict[str, dict], request: dict, figures_dir: str) -> dict:
    """Prefect task over :func:`evaluate_searches`."""
    return evaluate_searches(template_name, searches, request, figures_dir)
