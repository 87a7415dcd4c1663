"""Headroom of the ``lpo`` training grids: PPO clip's (and DPO's) final return at each profile's budget against
the grid's optimum.

A training setting on which every method sits at the optimum cannot show a discovery. For each grid and budget,
PPO clip and DPO (the lpo baselines' expressions) train in one ``ppo.train_programs`` call over ``--seeds`` seeds
(seeds 0, 1, ...); the final return is the template's metric (the episode mean over the last tenth of training).
The optimum is MiniGrid's return ``1 - 0.9 t / T`` of the shortest path, found by breadth-first search over
(position, direction) under turn-left, turn-right and forward from ``--resets`` reset states (navix's own resets;
Empty grids only: no doors or keys), averaged over them. Prints a markdown table and writes
``benchmarks/results/headroom.json``.

    .venv/bin/python benchmarks/headroom.py            # the lpo profiles' budgets
    .venv/bin/python benchmarks/headroom.py --quick    # tiny sizes
"""

from __future__ import annotations

import argparse
import collections
import time

import jax
import numpy as np
from common import RESULTS, machine, table, versions, write

from jaxlib_kernels import envs, interpreter, ppo
from jaxlib_kernels.search.drift import DPO, PPO_CLIP

DIRECTIONS = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # navix's directions 0..3 as (row, column) steps: east, south, ...


def optimum(env_name: str, resets: int) -> dict:
    """Mean optimal return over ``resets`` reset states of an Empty grid (breadth-first search per state)."""
    import navix as nx

    env = nx.make(env_name)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), resets)).state
    pos = np.asarray(state.entities["player"].position).reshape(resets, 2)
    heading = np.asarray(state.entities["player"].direction).reshape(resets)
    goal = np.asarray(state.entities["goal"].position).reshape(resets, -1, 2)[:, 0]
    free = np.asarray(state.grid)[0] == 0
    horizon = envs.default_max_steps(env_name)

    def shortest(p, d, g) -> int:
        start = (int(p[0]), int(p[1]), int(d))
        queue, seen = collections.deque([(start, 0)]), {start}
        while queue:
            (r, c, d), k = queue.popleft()
            if (r, c) == (int(g[0]), int(g[1])):
                return k
            dr, dc = DIRECTIONS[d]
            for nxt in ((r, c, (d - 1) % 4), (r, c, (d + 1) % 4), (r + dr, c + dc, d)):
                inside = 0 <= nxt[0] < free.shape[0] and 0 <= nxt[1] < free.shape[1]
                if inside and nxt not in seen and (free[nxt[0], nxt[1]] or (nxt[0], nxt[1]) == (g[0], g[1])):
                    seen.add(nxt)
                    queue.append((nxt, k + 1))
        raise ValueError(f"{env_name}: the goal is unreachable from {start}")

    steps = np.array([shortest(pos[i], heading[i], goal[i]) for i in range(resets)], dtype=np.float64)
    return {"optimum": float(np.mean(1 - 0.9 * steps / horizon)), "mean_steps": float(steps.mean()),
            "horizon": horizon, "resets": resets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", nargs="+", default=["Navix-Empty-5x5-v0", "Navix-Empty-Random-8x8-v0"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[40_960, 98_304, 393_216])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--resets", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: one 2,048-step budget, 2 seeds")
    ap.add_argument("--out", default=str(RESULTS / "headroom.json"))
    args = ap.parse_args()
    if args.quick:
        args.budgets, args.seeds, args.resets = [2048], 2, 16
    programs = interpreter.encode_population([PPO_CLIP, DPO])
    rows, results = [], []
    for env_name in args.envs:
        best = optimum(env_name, args.resets)
        for budget in args.budgets:
            config = ppo.PPOConfig(env_name=env_name, total_timesteps=budget)
            t = time.perf_counter()
            final = ppo.mean_return(ppo.train_programs(config, programs, list(range(args.seeds))))
            seconds = time.perf_counter() - t
            clip, dpo = final[0], final[1]
            results.append({"env": env_name, "budget": budget, "env_steps": config.env_steps, **best,
                            "ppo_clip": clip.tolist(), "dpo": dpo.tolist(), "ppo_clip_mean": float(clip.mean()),
                            "dpo_mean": float(dpo.mean()), "ppo_clip_of_optimum": float(clip.mean() / best["optimum"]),
                            "seconds_with_compile": seconds})
            rows.append([env_name, budget, float(clip.mean()), f"{', '.join(f'{v:.3f}' for v in clip)}",
                         float(dpo.mean()), best["optimum"], f"{clip.mean() / best['optimum']:.2f}"])
            print(f"{env_name} at {budget}: PPO clip {clip.mean():.3f}, DPO {dpo.mean():.3f}", flush=True)
    print()
    print(f"## headroom: final return at each budget ({args.seeds} seeds), against the optimum\n")
    print(table(["env", "budget", "PPO clip", "PPO clip per seed", "DPO", "optimum", "PPO clip / optimum"], rows))
    out = write({"machine": machine(), "versions": versions(), "seeds": args.seeds, "budgets": args.budgets,
                 "rows": results}, args.out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
