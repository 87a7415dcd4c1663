"""Population evaluation: one compiled ``jit(vmap(fitness))`` call against the same candidates one at a time.

Peers, side by side in one run: (a) the population of ``--population`` candidates evaluated by one compiled
``jit(vmap(fitness))`` call (one key per candidate, as in (b)); (b) ``jit(fitness)`` called once per candidate;
(c) a whole ES generation (ask, vmapped evaluation with a shared key, tell: ``es.meta.make_meta_step``).
Fitness: HaDES on CartPole-v1 (``--fitness hades``: behaviour cloning then a 500-step episode) or TA-LPO at a tiny
size (``--fitness talpo``: a short PPO run on Navix-Empty-5x5). Times are medians over ``--repeats``; compile time
is measured apart (``lower().compile()``). Prints a markdown table, writes ``benchmarks/results/meta_es.json``.

    .venv/bin/python benchmarks/meta_es.py --fitness hades --population 64 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels import ppo
from jaxlib_kernels.es import meta, talpo
from jaxlib_kernels.templates import hades


def problem(name: str):
    """``(fitness_fn, mean, sizes)`` of the benchmarked fitness."""
    if name == "hades":
        config = hades.HadesConfig(num_pairs=4, width=64, inner_steps=50, eval_episodes=2)
        mean = hades.initial_candidate(jax.random.key(0), config)
        sizes = {"env": config.env_name, "num_pairs": config.num_pairs, "width": config.width,
                 "inner_steps": config.inner_steps, "eval_episodes": config.eval_episodes, "episode_steps": 500}
        return hades.make_fitness(config), mean, sizes
    if name == "talpo":
        config = ppo.PPOConfig(num_envs=8, num_steps=32, total_timesteps=8 * 32 * 16, hidden=32)
        net = talpo.DriftNetConfig(hidden=32)
        mean = talpo.init_drift_params(jax.random.key(0), net)
        sizes = {"env": config.env_name, "num_envs": config.num_envs, "num_steps": config.num_steps,
                 "env_steps": config.env_steps, "drift_params": talpo.num_params(net)}
        return talpo.make_fitness(config, net, num_inits=4), mean, sizes
    raise SystemExit(f"unknown fitness {name!r}; use hades or talpo")


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def compile_seconds(jitted, *args) -> tuple[float, object]:
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return time.perf_counter() - start, compiled


def versions() -> dict:
    out = {}
    for package in ("jax", "jaxlib", "evosax", "gymnax", "navix", "flax", "optax", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fitness", default="hades", choices=["hades", "talpo"])
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "meta_es.json"))
    args = parser.parse_args(argv)

    fitness, mean, sizes = problem(args.fitness)
    es_config = meta.ESConfig(population_size=args.population, std=0.1, lr=0.05)
    strategy, es_params = meta.make_strategy(es_config, mean)
    state = meta.canonical_state(meta.init_state(jax.random.key(1), strategy, es_params, mean))
    population, _ = strategy.ask(jax.random.key(2), state, es_params)
    keys = jax.random.split(jax.random.key(3), args.population)
    candidates = [jax.tree_util.tree_map(lambda x, i=i: x[i], population) for i in range(args.population)]

    # (a) one compiled jit(vmap) call for the whole population
    batched_s, batched = compile_seconds(jax.jit(jax.vmap(fitness)), keys, population)
    batched_returns = batched(keys, population)
    # (b) the same candidates one at a time through one compiled single evaluation
    single_s, single = compile_seconds(jax.jit(fitness), keys[0], candidates[0])
    single_returns = jnp.stack([single(keys[i], candidates[i]) for i in range(args.population)])
    # vmapped and single evaluations differ in float rounding; PPO training amplifies that, CartPole mostly not
    diff = np.abs(np.asarray(batched_returns) - np.asarray(single_returns))
    # (c) a whole generation: ask + shared-key vmapped evaluation + tell
    step = meta.make_meta_step(strategy, fitness)
    step_s, step_compiled = compile_seconds(step, jax.random.key(4), state, es_params)

    rows = []
    for label, run, compile_time in (
        ("jit(vmap(fitness)), one call", lambda: batched(keys, population), batched_s),
        ("jit(fitness), one call per candidate",
         lambda: [single(keys[i], candidates[i]) for i in range(args.population)], single_s),
        ("ES generation (ask + vmap eval + tell)", lambda: step_compiled(jax.random.key(4), state, es_params), step_s),
    ):
        run()  # warm
        times = timed(run, args.repeats)
        median = statistics.median(times)
        rows.append({"method": label, "compile_s": compile_time, "median_s": median, "times_s": times,
                     "candidates_per_s": args.population / median})
    speedup = rows[1]["median_s"] / rows[0]["median_s"]

    device = jax.devices()[0]
    result = {
        "benchmark": "meta_es",
        "fitness": args.fitness,
        "population": args.population,
        "repeats": args.repeats,
        "sizes": sizes,
        "rows": rows,
        "speedup_vmap_over_loop": speedup,
        "returns_max_abs_diff": float(diff.max()),
        "returns_mean_abs_diff": float(diff.mean()),
        "returns_mean": float(np.mean(np.asarray(single_returns))),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "jax_backend": jax.default_backend(),
            "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
            "python": platform.python_version(),
        },
        "versions": versions(),
    }
    print(f"\n## meta_es: {args.fitness} fitness, population {args.population}, "
          f"{result['machine']['device']}, median of {args.repeats}\n")
    print("| method | compile (s) | median per population (s) | candidates / s |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['method']} | {row['compile_s']:.2f} | {row['median_s']:.4f} | {row['candidates_per_s']:.1f} |")
    print(f"\nvmap over loop: {speedup:.2f}x; |batched - one at a time| returns: mean {diff.mean():.3g}, "
          f"max {diff.max():.3g} (mean return {np.mean(np.asarray(single_returns)):.3g})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
