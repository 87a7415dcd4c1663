"""ES meta-training in checkpointed chunks, the population evaluated on Ray (ARCHITECTURE.md sections 2 and 6).

One chunk runs generations ``[start, end)`` of a search and leaves ``searches/<name>/gen_<end>.npz`` (the evosax
state and the metric history): ask and tell run jitted in the flow process, the population is evaluated by
:class:`PopulationEvaluator` actors, each holding ONE compiled ``jit(vmap(fitness))`` for its shard. With one
worker the whole population is one compiled call; with ``W`` workers it is split into ``W`` equal shards (the last
padded), so every generation after the first reuses the same executables. ``workers=0`` evaluates in the flow
process, without Ray. Generation ``g`` uses ``fold_in(loop_key, g)`` exactly as :func:`meta.run_meta`, so a chunked
run equals an uninterrupted one and a stopped run resumes from its last checkpoint. Each computed chunk appends a
line to ``chunks.jsonl``; a chunk whose checkpoint already exists is read back, not recomputed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.runtime.runfolder import write_json


def _wrap_key(data):
    import jax

    return jax.random.wrap_key_data(np.asarray(data, dtype=np.uint32))


class PopulationEvaluator:
    """Builds the problem of ``spec`` once and evaluates populations with one compiled ``jit(vmap(fitness))``;
    ``traces`` counts how often the fitness was traced (once per population shape)."""

    def __init__(self, spec: dict, shared_eval_key: bool = True):
        from jaxlib_kernels.es import meta, problems

        fitness, _ = problems.make_problem(spec)
        self.traces = 0

        def counted(key, candidate):
            self.traces += 1
            return fitness(key, candidate)

        import jax

        self._evaluate = jax.jit(meta.make_population_eval(counted, shared_eval_key))
        self._evaluate_keys = jax.jit(jax.vmap(fitness))  # one key per candidate (the search centre's check)

    def evaluate(self, key_data: np.ndarray, population: Any) -> np.ndarray:
        import jax

        returns = self._evaluate(_wrap_key(key_data), jax.tree_util.tree_map(np.asarray, population))
        return np.asarray(returns)

    def evaluate_keys(self, keys_data: np.ndarray, population: Any) -> np.ndarray:
        import jax

        keys = jax.random.wrap_key_data(np.asarray(keys_data, dtype=np.uint32))
        return np.asarray(self._evaluate_keys(keys, jax.tree_util.tree_map(np.asarray, population)))

    def stats(self) -> dict:
        return {"traces": self.traces, "pid": os.getpid()}


# evaluators live as long as the flow process: one set per (problem, workers, address), reused by every chunk
_POOLS: dict[tuple, list] = {}
_LOCK = threading.Lock()


def _ray_resources() -> dict:
    import ray

    if ray.cluster_resources().get("GPU", 0):
        return {"num_gpus": float(os.environ.get("SCIENTIST_GPU_FRACTION", "1.0")), "num_cpus": 1}
    return {"num_cpus": 1}


def available_workers(ray_address: str | None) -> int:
    """How many evaluators the cluster can hold at once: its GPUs, else its CPUs."""
    import ray

    from tasks.experiments import init_ray

    init_ray(ray_address)
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0) or resources.get("CPU", 1)))


def evaluators(spec: dict, workers: int, ray_address: str | None, shared_eval_key: bool = True) -> list:
    """``workers`` evaluators of ``spec``: in-process objects (``workers=0``) or Ray actors, cached per process."""
    key = (json.dumps(spec, sort_keys=True), workers, ray_address, shared_eval_key)
    with _LOCK:
        if key not in _POOLS:
            if workers == 0:
                _POOLS[key] = [PopulationEvaluator(spec, shared_eval_key)]
            else:
                import ray

                from tasks.experiments import init_ray

                init_ray(ray_address)
                actor = ray.remote(PopulationEvaluator).options(**_ray_resources())
                _POOLS[key] = [actor.remote(spec, shared_eval_key) for _ in range(workers)]
        return _POOLS[key]


def release_evaluators(spec: dict | None = None) -> None:
    """Kill this process's evaluator actors of ``spec`` (default: all); they hold Ray CPUs that the next search's
    evaluators and the experiment units need."""
    with _LOCK:
        for key in list(_POOLS):
            if spec is not None and key[0] != json.dumps(spec, sort_keys=True):
                continue
            for ev in _POOLS.pop(key):
                if not isinstance(ev, PopulationEvaluator):
                    import ray

                    ray.kill(ev)


def evaluator_stats(spec: dict, workers: int, ray_address: str | None) -> list[dict]:
    pool = evaluators(spec, workers, ray_address)
    if workers == 0:
        return [pool[0].stats()]
    import ray

    return ray.get([ev.stats.remote() for ev in pool])


def evaluate_population(pool: list, key_data: np.ndarray, population: Any) -> np.ndarray:
    """Returns of every candidate; the population split into ``len(pool)`` equal shards (the last padded)."""
    import jax

    if isinstance(pool[0], PopulationEvaluator):
        return pool[0].evaluate(key_data, population)
    import ray

    population = jax.tree_util.tree_map(np.asarray, population)
    size = jax.tree_util.tree_leaves(population)[0].shape[0]
    if len(pool) == 1:
        return ray.get(pool[0].evaluate.remote(key_data, population))
    shard = -(-size // len(pool))
    index = np.minimum(np.arange(shard * len(pool)), size - 1)  # pad with the last candidate
    refs = [ev.evaluate.remote(key_data, jax.tree_util.tree_map(lambda x, i=i: x[index[i * shard:(i + 1) * shard]],
                                                                  population))
            for i, ev in enumerate(pool)]
    return np.concatenate(ray.get(refs))[:size]


def evaluate_center(pool: list, seed: int, center: Any, num_seeds: int) -> list[float]:
    """Returns of the search centre on ``num_seeds`` fixed keys (the same at every generation, never used by the
    search): the meta-training progress without the per-generation noise of the population's shared key."""
    import jax

    keys = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(10_007 + seed), num_seeds)))
    batch = jax.tree_util.tree_map(lambda x: np.broadcast_to(np.asarray(x), (num_seeds, *np.shape(x))), center)
    if isinstance(pool[0], PopulationEvaluator):
        return pool[0].evaluate_keys(keys, batch).tolist()
    import ray

    return np.asarray(ray.get(pool[0].evaluate_keys.remote(keys, batch))).tolist()


class ProgramTrainer:
    """Trains shards of a symbolic population (interpreted drift programs, a template's ``discovery.train_programs``:
    PPO for ``lpo``, IPPO for ``marl``): a Ray actor of the discovery engine, one per worker, kept for the whole
    search (its compiled shard program is reused)."""

    def train(self, template_name: str, config, ops: np.ndarray, consts: np.ndarray, seeds: list[int]) -> np.ndarray:
        from jaxlib_kernels import interpreter
        from jaxlib_kernels.templates import make

        programs = interpreter.Program(np.asarray(ops), np.asarray(consts, np.float32))
        return np.asarray(make(template_name).discovery.train_programs(config, programs, list(seeds)))

    def stats(self) -> dict:
        return {"pid": os.getpid()}


def program_trainers(workers: int, ray_address: str | None) -> list:
    """``workers`` :class:`ProgramTrainer` actors (GPU fractions where the cluster has GPUs), cached per process."""
    key = ("program-trainers", workers, ray_address)
    with _LOCK:
        if key not in _POOLS:
            import ray

            from tasks.experiments import init_ray

            init_ray(ray_address)
            actor = ray.remote(ProgramTrainer).options(**_ray_resources())
            _POOLS[key] = [actor.remote() for _ in range(workers)]
        return _POOLS[key]


def release_program_trainers() -> None:
    """Kill this process's :class:`ProgramTrainer` actors (they hold Ray CPUs)."""
    with _LOCK:
        for key in [k for k in _POOLS if k[0] == "program-trainers"]:
            import ray

            for actor in _POOLS.pop(key):
                ray.kill(actor)


def train_programs_sharded(pool: list, template_name: str, config, programs, seeds: list[int]) -> np.ndarray:
    """The template's metric (candidates, seeds) of a population split into ``len(pool)`` equal shards (the last padded with
    its last member), one shard per actor, all at once."""
    import ray

    ops, consts = np.asarray(programs.ops), np.asarray(programs.consts)
    size = ops.shape[0]
    shard = -(-size // len(pool))
    index = np.minimum(np.arange(shard * len(pool)), size - 1)
    refs = [actor.train.remote(template_name, config, ops[index[i * shard:(i + 1) * shard]],
                               consts[index[i * shard:(i + 1) * shard]], list(seeds)) for i, actor in enumerate(pool)]
    return np.concatenate(ray.get(refs))[:size]


_SEARCHES: dict[str, tuple] = {}


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
        history = {k: list(v) for k, v in history.items()}
    pool = evaluators(spec, workers, ray_address, es.get("shared_eval_key", True))
    if center_seeds and start == 0:
        write_json(folder / "center_000000.json", {"generation": 0, "returns": evaluate_center(
            pool, seed, meta.search_mean(strategy, state), center_seeds)})
    for generation in range(start, end):
        ask_key, eval_key, tell_key = jax.random.split(jax.random.fold_in(loop_key, generation), 3)
        population, state = ask(ask_key, state, es_params)
        returns = evaluate_population(pool, np.asarray(jax.random.key_data(eval_key)), population)
        state, metrics = tell(tell_key, population, jax.numpy.asarray(returns), state, es_params)
        for name, value in metrics.items():
            history.setdefault(name, []).append(np.asarray(value))
    state = meta.canonical_state(state)
    meta.save_checkpoint(folder, end, state, {k: np.asarray(v) for k, v in history.items()})
    best = meta.ravel_pytree(mean)[1](state.best_solution)
    np.savez(folder / "search_mean.npz", **_flat(meta.search_mean(strategy, state)))
    np.savez(folder / "best.npz", **_flat(best))
    if center_seeds:
        write_json(folder / f"center_{end:06d}.json", {"generation": end, "returns": evaluate_center(
            pool, seed, meta.search_mean(strategy, state), center_seeds)})
    stats = evaluator_stats(spec, workers, ray_address)
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


def _flat(tree: Any) -> dict[str, np.ndarray]:
    """A candidate pytree as named host arrays (``obs``, ``w0`` ... or ``0/w`` for lists of dicts)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v) for path, v in leaves}


def load_candidate(search_dir: str | Path, like: Any, which: str = "search_mean") -> Any:
    """The candidate saved by :func:`run_chunk` (``search_mean`` or ``best``), refilled into ``like``'s tree."""
    import jax

    with np.load(Path(search_dir) / f"{which}.npz") as data:
        names = list(_flat(like))
        leaves = [data[n] for n in names]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def write_curve(search_dir: str | Path, metrics: dict, centers: list[dict] | None = None) -> dict:
    """``fitness.csv`` and ``fitness.json`` (per generation: mean / max / best return, ...) in ``search_dir``, and
    ``center.csv`` (the search centre's mean return on fixed keys with its 95% CI, per checkpoint) when given."""
    import pandas as pd

    from tasks.aggregation import summarize

    folder = Path(search_dir)
    frame = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in metrics.items()})
    frame.insert(0, "generation", np.arange(1, len(frame) + 1))
    frame.to_csv(folder / "fitness.csv", index=False)
    data = {k: frame[k].tolist() for k in frame.columns}
    if centers:
        rows = [{"generation": c["generation"], **{k: v for k, v in summarize(np.asarray(c["returns"])).items()
                                                    if k != "ci95"},
                 "ci95_low": summarize(np.asarray(c["returns"]))["ci95"][0],
                 "ci95_high": summarize(np.asarray(c["returns"]))["ci95"][1]} for c in centers]
        pd.DataFrame(rows).to_csv(folder / "center.csv", index=False)
        data["center"] = rows
    write_json(folder / "fitness.json", data)
    return {"csv": str(folder / "fitness.csv"), "json": str(folder / "fitness.json")}


# ---- Prefect task -------------------------------------------------------------------------------------------

from tasks.runtime.caching import stage


@stage(name="es_chunk", retries=1, retry_delay_seconds=2)
def run_chunk_task(spec: dict, es: dict, seed: int, start: int, end: int, search_dir: str, workers: int = 1,
                   ray_address: str | None = None, center_seeds: int = 0) -> dict:
    """Prefect task over :func:`run_chunk`: cached on its inputs, so a rerun of the run id skips finished chunks."""
    from prefect import get_run_logger

    out = run_chunk(spec, es, seed, start, end, search_dir, workers, ray_address, center_seeds)
    m = out["metrics"]
    get_run_logger().info("%s generations %d-%d: mean %.3f, max %.3f, best %.3f%s", Path(search_dir).name, start + 1,
                          end, m["return_mean"][-1], m["return_max"][-1], m["best_return"][-1],
                          f" ({out['seconds']:.1f} s)" if out["computed"] else " (from its checkpoint)")
    return out


# ---- figures ------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> tuple[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight", facecolor="white")
    fig.savefig(pdf, bbox_inches="tight")
    _plt().close(fig)
    return str(png), str(pdf)


def plot_fitness(curves: dict[str, dict], out_dir: Path, ylabel: str = "return",
                 centers: dict[str, list[dict]] | None = None) -> dict:
    """ES fitness per generation of each search: population mean (line), population max (dashed), best so far,
    and the search centre on fixed keys with 95% CIs (markers) where evaluated."""
    from tasks.aggregation import summarize

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for i, (name, m) in enumerate(curves.items()):
        g = np.arange(1, len(m["return_mean"]) + 1)
        color = f"C{i}"
        ax.plot(g, m["return_mean"], color=color, label=f"{name}: population mean")
        ax.plot(g, m["return_max"], color=color, ls="--", lw=1, label=f"{name}: population max")
        ax.plot(g, m["best_return"], color=color, ls=":", lw=1, label=f"{name}: best so far")
        if centers and centers.get(name):
            stats = [summarize(np.asarray(c["returns"])) for c in centers[name]]
            gens = [c["generation"] for c in centers[name]]
            mean = np.array([s["mean"] for s in stats])
            err = np.array([[s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]] for s in stats]).T
            ax.errorbar(gens, mean, yerr=np.nan_to_num(err), fmt="o", color=color, ms=4, capsize=2,
                        label=f"{name}: search centre, fixed seeds (95% CI)")
    ax.set_xlabel("ES generation")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    png, pdf = _save(fig, Path(out_dir), "es_fitness")
    return {"name": "es_fitness", "png": png, "pdf": pdf,
            "caption": "ES meta-training: mean and max return of each generation's population (each generation "
                       "sees one shared random key), the best so far, and the search centre's return on fixed seeds."}


def plot_learned_drift(source: str, out_dir: Path, label: str = "learned drift") -> dict:
    """The learned drift over r and A at the start, middle and end of training, beside PPO clip's."""
    import jax
    import jax.numpy as jnp

    from jaxlib_kernels import plugin
    from jaxlib_kernels.templates import lpo

    plt = _plt()
    learned = jax.jit(plugin.load_plugin(source, "drift"))
    clip_fn = jax.jit(plugin.load_plugin(lpo.baseline_source("ppo_clip"), "drift"))

    def grid(fn, a, p):  # (len(a), len(ratio)) values
        r2, a2 = np.meshgrid(ratio, a)
        out = fn(jnp.asarray(r2, jnp.float32), jnp.asarray(a2, jnp.float32), jnp.float32(p))
        return np.asarray(jnp.broadcast_to(out, r2.shape), dtype=np.float64)

    def evaluate_drift(which, r, a, p):
        return grid(learned if which == "learned" else clip_fn, np.array([a]), p)[0]

    source, clip = "learned", "clip"
    ratio = np.exp(np.linspace(np.log(0.5), np.log(2.0), 61))
    advantages = np.linspace(-2.0, 2.0, 41)
    progress = (0.0, 0.5, 1.0)
    values = np.stack([grid(learned, advantages, p) for p in progress])
    clip_values = grid(clip_fn, advantages, 0.0)
    vmax = float(max(values.max(), clip_values.max(), 1e-6))
    fig, axes = plt.subplots(1, 5, figsize=(16.5, 3.3), layout="constrained")
    extent = [ratio[0], ratio[-1], advantages[0], advantages[-1]]
    for ax, p, v in zip(axes[:3], progress, values):
        im = ax.imshow(v, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(f"{label}, n/N = {p:g}", fontsize=9)
        ax.set_xlabel("ratio r")
    axes[0].set_ylabel("advantage A")
    axes[3].imshow(clip_values, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=vmax, cmap="viridis")
    axes[3].set_title("PPO clip (eps = 0.2)", fontsize=9)
    axes[3].set_xlabel("ratio r")
    fig.colorbar(im, ax=axes[:4].tolist(), fraction=0.02, pad=0.01, label="drift D")
    ax = axes[4]
    for a, style in ((1.0, "-"), (-1.0, "--")):
        for p, color in zip(progress, ("C0", "C1", "C2")):
            ax.plot(ratio, evaluate_drift(source, ratio, a, p), color=color, ls=style,
                    label=f"A = {a:+g}, n/N = {p:g}")
        ax.plot(ratio, evaluate_drift(clip, ratio, a, 0.0), color="k", ls=style, lw=1, label=f"PPO clip, A = {a:+g}")
    ax.set_xscale("log")
    ax.set_xlabel("ratio r")
    ax.set_ylabel("drift D")
    ax.legend(fontsize=6, frameon=False)
    png, pdf = _save(fig, Path(out_dir), "learned_drift")
    return {"name": "learned_drift", "png": png, "pdf": pdf,
            "caption": f"The {label} D(r, A, n/N) over the ratio r and advantage A at the start (n/N = 0), middle and "
                       "end (n/N = 1) of training, beside PPO clip's drift; right: slices at A = +1 and A = -1."}


def plot_dataset(dataset: dict, out_dir: Path, name: str, obs_labels: list[str] | None = None) -> dict:
    """A learned HaDES dataset: each pair's state (rows: pairs, columns: state dimensions) and action probabilities."""
    import jax

    plt = _plt()
    obs, logits = np.asarray(dataset["obs"]), np.asarray(dataset["logits"])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    order = np.argsort(probs[:, 0])
    n, d = obs.shape
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 0.9 * d + 0.9 * probs.shape[1], 1.2 + 0.28 * n),
                             gridspec_kw={"width_ratios": [d, max(probs.shape[1], 1)]})
    lim = float(np.abs(obs).max()) or 1.0
    im = axes[0].imshow(obs[order], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    axes[0].set_xticks(range(d), obs_labels or [f"s{i}" for i in range(d)], rotation=45, fontsize=7)
    axes[0].set_ylabel("synthetic pair")
    axes[0].set_title("states", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.05)
    axes[1].imshow(probs[order], cmap="Greys", vmin=0, vmax=1, aspect="auto")
    axes[1].set_xticks(range(probs.shape[1]), [f"a{i}" for i in range(probs.shape[1])], fontsize=7)
    axes[1].set_yticks([])
    axes[1].set_title("action probabilities", fontsize=9)
    if n <= 32:
        for i in range(n):
            for j in range(probs.shape[1]):
                axes[1].text(j, i, f"{probs[order][i, j]:.2f}", ha="center", va="center", fontsize=6,
                             color="white" if probs[order][i, j] > 0.5 else "black")
    png, pdf = _save(fig, Path(out_dir), name)
    return {"name": name, "png": png, "pdf": pdf, "caption": f"Learned dataset {name}: {n} state-action pairs."}


def plot_hades_summary(sizes: dict, direct: dict | None, transfer: dict, out_dir: Path) -> dict:
    """Return against dataset size (mean and 95% CI over fresh policies) and against policy width (transfer)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ns = sorted(sizes, key=int)
    means = [sizes[n]["mean"] for n in ns]
    lo = [sizes[n]["mean"] - sizes[n]["ci95"][0] for n in ns]
    hi = [sizes[n]["ci95"][1] - sizes[n]["mean"] for n in ns]
    axes[0].errorbar([int(n) for n in ns], means, yerr=[lo, hi], marker="o", capsize=3, label="HaDES-R dataset")
    if direct:
        axes[0].axhline(direct["mean"], color="k", ls="--", lw=1, label="direct OpenES (same budget)")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("dataset size (state-action pairs)")
    axes[0].set_ylabel("return of fresh policies")
    axes[0].legend(fontsize=7, frameon=False)
    for n in ns:
        widths = sorted(transfer[n], key=int)
        axes[1].plot([int(w) for w in widths], [transfer[n][w] for w in widths], marker="o", label=f"{n} pairs")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("policy width (hidden units)")
    axes[1].set_ylabel("mean return")
    axes[1].legend(fontsize=7, frameon=False)
    png, pdf = _save(fig, Path(out_dir), "hades_sizes_widths")
    return {"name": "hades_sizes_widths", "png": png, "pdf": pdf,
            "caption": "HaDES: return against dataset size (95% CI over fresh policies), and transfer across widths."}


def learned_drift_behaviour(meta_run_dir: str | Path) -> dict:
    """The TA-LPO drift a ``scientist meta --template lpo`` run learned (its search mean: data, no code), evaluated on
    the lpo probe grid: ``{"target": values, "problem": spec, "generation": g, "distances": {baseline: d}}``.
    Raises ``FileNotFoundError`` / ``ValueError`` with one line when the folder holds no lpo search."""
    import jax

    from jaxlib_kernels.es import problems, talpo
    from jaxlib_kernels.templates.lpo import EXPRESSIONS, search

    folder = Path(meta_run_dir) / "searches" / "talpo"
    if not (folder / "search.json").exists() or not (folder / "search_mean.npz").exists():
        raise FileNotFoundError(f"{meta_run_dir}: no TA-LPO search here (searches/talpo/search.json and "
                                "search_mean.npz come from `scientist meta --template lpo`)")
    info = json.loads((folder / "search.json").read_text())
    spec = info.get("problem") or {}
    if spec.get("template") != "lpo":
        raise ValueError(f"{meta_run_dir}: the search is for template {spec.get('template')!r}, not lpo")
    net = problems.drift_net(spec)
    theta = load_candidate(folder, talpo.init_drift_params(jax.random.key(0), net))
    target = search.behaviour_of(lambda r, a, p: np.asarray(talpo.drift_apply(theta, r, a, p, net)))
    distances = {name: search.distance(search.behaviour(e), target) for name, e in EXPRESSIONS.items()}
    done = sorted(folder.glob("gen_*.npz"))
    return {"target": target.tolist(), "problem": spec, "generation": int(done[-1].stem[4:]) if done else 0,
            "distances": distances, "folder": str(folder)}
