"""Gridworld steps per second: our adapter (``jaxlib_kernels.envs``) against navix called directly and MiniGrid.

Peers, side by side in one run, random actions, observations consumed the way a policy consumes them: every
observation, as float32, is multiplied by one fixed random vector (a policy's first layer, in miniature) and the
results are summed into the scan carry, so XLA cannot drop their computation. (a) our adapter,
``jit(scan(vmap(env.step)))`` through the environment protocol (explicit keys, same-step reset, flat float
observations); (b) navix called directly (``env.step`` with its own delayed autoreset, the same full-grid symbolic
observation); (c) MiniGrid (gymnasium, the full-grid symbolic observation through ``FullyObsWrapper`` +
``ImgObsWrapper``), one env and a ``SyncVectorEnv`` of 16.
Compile time is measured apart (``lower().compile()``); times are medians over ``--repeats``, the JAX peers
interleaved repeat by repeat so that a noisy neighbour hits both alike. Memory: XLA's memory analysis of the
compiled program for JAX, tracemalloc's peak for MiniGrid. Prints a markdown table, writes
``benchmarks/results/envs.json``.

    .venv/bin/python benchmarks/envs.py                 # Empty-8x8 and DoorKey-8x8, batch 1, 256, 2048, 8192
    .venv/bin/python benchmarks/envs.py --quick         # a tiny run (the tests use it)
    .venv/bin/python benchmarks/envs.py --no-minigrid   # the JAX peers only (without the bench extra)
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import jax
import jax.numpy as jnp
import navix as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from jaxlib_kernels import envs

ENVS = {"Empty-8x8": ("Navix-Empty-8x8-v0", "MiniGrid-Empty-8x8-v0"),
        "DoorKey-8x8": ("Navix-DoorKey-8x8-v0", "MiniGrid-DoorKey-8x8-v0")}


def num_steps_for(batch: int, budget: int) -> int:
    """Scan length: about ``budget`` env steps per call, between 32 and 1024 steps."""
    return int(max(32, min(1024, budget // batch)))


def consume(obs: jax.Array, batch: int) -> jax.Array:
    """What a policy's first layer does with the observations, reduced to a scalar."""
    flat = obs.reshape(batch, -1).astype(jnp.float32)
    weights = jax.random.normal(jax.random.key(7), (flat.shape[-1],), jnp.float32)
    return (flat @ weights).sum()


def adapter_rollout(name: str, batch: int, steps: int, env=None):
    env = env or envs.make(name)

    params = env.default_params
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run(key):
        key, reset_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, batch), params)

        def body(carry, _):
            state, key, acc = carry
            key, action_key, step_key = jax.random.split(key, 3)
            action = jax.random.randint(action_key, (batch,), 0, env.num_actions)
            obs, state, reward, _, _, _ = step(jax.random.split(step_key, batch), state, action, params)
            return (state, key, acc + consume(obs, batch) + reward.sum()), None

        (_, _, acc), _ = jax.lax.scan(body, (state, key, consume(obs, batch)), None, steps)
        return acc

    return jax.jit(run)


def navix_rollout(name: str, batch: int, steps: int):
    max_steps = envs.default_max_steps(name)
    env = nx.make(name, max_steps=max_steps, penality_coeff=0.9, observation_fn=nx.observations.symbolic)
    num_actions = int(env.action_space.maximum) + 1

    def run(key):
        key, reset_key = jax.random.split(key)
        timestep = jax.vmap(env.reset)(jax.random.split(reset_key, batch))

        def body(carry, _):
            timestep, key, acc = carry
            key, action_key = jax.random.split(key)
            action = jax.random.randint(action_key, (batch,), 0, num_actions)
            timestep = jax.vmap(env.step)(timestep, action)
            acc = acc + consume(timestep.observation, batch) + timestep.reward.sum()
            return (timestep, key, acc), None

        acc0 = consume(timestep.observation, batch)
        (_, _, acc), _ = jax.lax.scan(body, (timestep, key, acc0), None, steps)
        return acc

    return jax.jit(run)


def minigrid_run(gym_id: str, vector: int, steps: int, seed: int) -> tuple[float, int, float]:
    """(seconds, env steps, observation checksum) of ``steps`` calls with random actions; obs consumed."""
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the MiniGrid ids
    from minigrid.wrappers import FullyObsWrapper, ImgObsWrapper

    def make():
        return ImgObsWrapper(FullyObsWrapper(gym.make(gym_id)))

    rng = np.random.default_rng(seed)
    weights = None
    if vector == 0:
        env = make()
        obs, _ = env.reset(seed=seed)
        n = env.action_space.n
        weights = np.random.default_rng(7).standard_normal(obs.size).astype(np.float32)
        acc = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(n)))
            acc += float(obs.reshape(-1).astype(np.float32) @ weights)
            if terminated or truncated:
                obs, _ = env.reset()
        seconds = time.perf_counter() - start
        env.close()
        return seconds, steps, float(acc)
    env = gym.vector.SyncVectorEnv([make for _ in range(vector)])
    obs, _ = env.reset(seed=seed)
    n = env.single_action_space.n
    weights = np.random.default_rng(7).standard_normal(obs[0].size).astype(np.float32)
    acc = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, _, _, _ = env.step(rng.integers(n, size=vector))
        acc += float((obs.reshape(vector, -1).astype(np.float32) @ weights).sum())
    seconds = time.perf_counter() - start
    env.close()
    return seconds, steps * vector, float(acc)


def bench_jax(builders: dict, name: str, batch: int, steps: int, repeats: int) -> list[dict]:
    """Compile each peer apart, then time them interleaved, ``repeats`` rounds; one row per peer."""
    key = jax.random.key(0)
    print(f"{name}, batch {batch}: compiling and running ...", flush=True)
    compiled, rows = {}, {}
    for label, build in builders.items():
        start = time.perf_counter()
        compiled[label] = build(name, batch, steps).lower(key).compile()
        rows[label] = {"compile_s": time.perf_counter() - start, "times_s": [],
                       "memory_bytes": common.jax_memory_bytes(compiled[label])}
        jax.block_until_ready(compiled[label](key))  # warm
    for r in range(repeats):
        for label in builders:
            run_key = jax.random.key(r + 1)
            rows[label]["times_s"].append(common.timed(lambda c=compiled[label], k=run_key: c(k),
                                                       jax.block_until_ready))
    out = []
    for label, row in rows.items():
        med = common.median(row["times_s"])
        out.append({"peer": label, "batch": batch, "scan_steps": steps, "env_steps": batch * steps,
                    "median_s": med, "steps_per_s": batch * steps / med, **row})
    return out


def bench_minigrid(gym_id: str, vector: int, steps: int, repeats: int) -> dict:
    minigrid_run(gym_id, vector, max(10, steps // 10), seed=0)  # warm imports and caches
    times, n = [], 0
    tracemalloc.start()
    for r in range(repeats):
        seconds, n, _ = minigrid_run(gym_id, vector, steps, seed=r + 1)
        times.append(seconds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    med = common.median(times)
    label = "MiniGrid, one env" if vector == 0 else f"MiniGrid, SyncVectorEnv({vector})"
    return {"peer": label, "batch": max(1, vector), "scan_steps": steps, "env_steps": n, "compile_s": 0.0,
            "median_s": med, "steps_per_s": n / med, "times_s": times, "memory_bytes": peak}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 256, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2**18, help="about this many env steps per timed JAX call")
    parser.add_argument("--minigrid-steps", type=int, default=2000, help="env.step calls per MiniGrid repeat")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one env (for the tests)")
    parser.add_argument("--no-minigrid", action="store_true", help="skip MiniGrid (needs the bench extra)")
    parser.add_argument("--out", default=str(common.RESULTS / "envs.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.envs, args.batches, args.repeats, args.budget, args.minigrid_steps = ["Empty-8x8"], [1, 16], 2, 512, 50

    builders = {"ours (jaxlib_kernels.envs)": adapter_rollout, "navix direct": navix_rollout}
    results = {}
    for short in args.envs:
        navix_id, gym_id = ENVS[short]
        rows = [] if args.no_minigrid else [
            bench_minigrid(gym_id, 0, args.minigrid_steps, args.repeats),
            bench_minigrid(gym_id, 16, max(1, args.minigrid_steps // 16), args.repeats)]
        for batch in args.batches:
            rows += bench_jax(builders, navix_id, batch, num_steps_for(batch, args.budget), args.repeats)
        single = None if args.no_minigrid else rows[0]["steps_per_s"]
        ratios = {}
        for batch in args.batches:
            ours = next(r for r in rows if r["peer"].startswith("ours") and r["batch"] == batch)
            direct = next(r for r in rows if r["peer"] == "navix direct" and r["batch"] == batch)
            ours["x_minigrid_single"] = ours["steps_per_s"] / single if single else None
            direct["x_minigrid_single"] = direct["steps_per_s"] / single if single else None
            ratios[str(batch)] = {"ours_over_minigrid_single": ours["x_minigrid_single"],
                                  "ours_over_navix_direct": ours["steps_per_s"] / direct["steps_per_s"]}
        results[short] = {"navix_id": navix_id, "minigrid_id": gym_id, "rows": rows, "ratios": ratios}

    result = {"benchmark": "envs", "quick": args.quick, "repeats": args.repeats, "batches": args.batches,
              "observation": "full-grid symbolic (H, W, 3), consumed as float32 @ a fixed random vector, summed", "actions": "uniform random",
              "envs": results, "machine": common.machine(), "versions": common.versions(),
              "peak_rss_mib": common.peak_rss_bytes() / 2**20}
    for short, res in results.items():
        print(f"\n## envs: {short}, random actions, steps/s (median of {args.repeats}), {result['machine'].get('device')}\n")
        print(common.table(
            ["peer", "batch", "compile (s)", "median (s)", "steps/s", "x MiniGrid one env", "memory (MiB)"],
            [[r["peer"], r["batch"], r["compile_s"], r["median_s"], r["steps_per_s"], r.get("x_minigrid_single"),
              common.mib(r["memory_bytes"])] for r in res["rows"]]))
        print("\n" + common.table(
            ["batch", "ours / MiniGrid one env", "ours / navix direct", "variant obs*0.1 / navix direct"],
            [[b, v["ours_over_minigrid_single"], v["ours_over_navix_direct"], v.get("variant_over_navix_direct")]
             for b, v in res["ratios"].items()]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
