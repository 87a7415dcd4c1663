"""Environment steps per second of whole PPO training runs: our kernel against a purejaxrl-style PPO and SB3.

Peers, side by side in one run, same environment, same number of env steps and the same hyperparameters:
(a) ours, ``jit(vmap(jaxlib_kernels.ppo.make_train(config)))`` over 1, 8 and 64 seeds; (b) a purejaxrl-style
single-file PPO (``benchmarks/purejaxrl_ppo.py``, navix and gymnax through their own APIs), same seeds;
(c) Stable-Baselines3 PPO (CPU torch) on MiniGrid's own gymnasium env with a full-grid symbolic observation,
flattened and divided by 10 like ours, 16 ``DummyVecEnv`` envs, MLP 64-64 tanh, the same PPO settings.
Tasks: a navix grid (``Navix-Empty-5x5-v0`` / ``MiniGrid-Empty-5x5-v0``, MiniGrid's reward and horizon) and
gymnax ``CartPole-v1`` (purejaxrl's CartPole settings; JAX peers only). The final return (episode-weighted mean
over the last 10% of updates, the same rule for every peer) stands beside each speed: a faster run that learns
less does not count. JAX compile time is measured apart (``lower().compile()``), times are medians over
``--repeats`` with the two JAX peers interleaved (the first run after compiling is timed too: ``--repeats 1`` gives two times). Prints markdown tables, writes ``benchmarks/results/ppo.json``.

    .venv/bin/python benchmarks/ppo.py                  # the whole comparison
    .venv/bin/python benchmarks/ppo.py --quick          # a tiny run (the tests use it)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# devices first: --devices must reach XLA before JAX makes its backends (importing jax does not make them)
import common

from jaxlib_kernels import devices

if __name__ == "__main__":
    devices.force_cpu_devices(common.early_devices(sys.argv[1:]))

import jax
import jax.numpy as jnp
import numpy as np
import purejaxrl_ppo

from jaxlib_kernels import ppo

OURS = "ours (jaxlib_kernels.ppo)"
OURS_ONE = "ours, one device"
PJR = "purejaxrl-style"
CHUNK = 8  # at most 8 seeds vmapped at once on each device (devices.population_jit): 32 at once outgrow the caches

GRID = {"Navix-Empty-5x5-v0": "MiniGrid-Empty-5x5-v0", "Navix-Empty-8x8-v0": "MiniGrid-Empty-8x8-v0",
        "Navix-DoorKey-5x5-v0": "MiniGrid-DoorKey-5x5-v0"}


def task_configs(env_name: str, total: int, num_envs: int = 16, num_steps: int = 128) -> tuple[ppo.PPOConfig, dict]:
    """Our config and the purejaxrl config with the same settings."""
    if env_name == "CartPole-v1":  # purejaxrl's CartPole settings
        ours = ppo.PPOConfig(env_name=env_name, total_timesteps=total, num_envs=4, num_steps=128, lr=2.5e-4)
    else:  # our pipeline's grid settings (16 envs x 128 steps), or as given
        ours = ppo.PPOConfig(env_name=env_name, total_timesteps=total, num_envs=num_envs, num_steps=num_steps)
    pjr = purejaxrl_ppo.default_config(
        ENV_NAME=env_name, MAX_STEPS=ours.max_steps, NUM_ENVS=ours.num_envs, NUM_STEPS=ours.num_steps,
        TOTAL_TIMESTEPS=total, UPDATE_EPOCHS=ours.update_epochs, NUM_MINIBATCHES=ours.num_minibatches,
        GAMMA=ours.gamma, GAE_LAMBDA=ours.gae_lambda, ENT_COEF=ours.ent_coef, VF_COEF=ours.vf_coef,
        MAX_GRAD_NORM=ours.max_grad_norm, LR=ours.lr, ANNEAL_LR=ours.anneal_lr, HIDDEN=ours.hidden)
    return ours, pjr


def stacked_init(init, keys):
    init = jax.jit(init)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])


def bench_jax(env_name: str, total: int, seeds: int, repeats: int, num_envs: int, num_steps: int) -> list[dict]:
    """Ours with the seeds split over the local devices, ours on one device, purejaxrl-style as published
    (``jit(vmap)`` on one device). With one seed, or one device, the split row is left out (it is the same)."""
    ours_cfg, pjr_cfg = task_configs(env_name, total, num_envs, num_steps)
    keys, init_keys = ppo.seed_keys(np.arange(seeds))
    ours_params = stacked_init(ppo.make_init(ours_cfg), init_keys)
    ours_train = ppo.make_train(ours_cfg)
    split = devices.population_devices(seeds)
    peers = {}
    if len(split) > 1:
        peers[f"{OURS}, seeds over {len(split)} devices"] = (
            devices.population_jit(ours_train, seeds, chunk=CHUNK), ours_params, ours_cfg.env_steps)
    peers[OURS_ONE] = (jax.jit(jax.vmap(ours_train)), ours_params, ours_cfg.env_steps)
    peers[PJR] = (jax.jit(jax.vmap(purejaxrl_ppo.make_train(pjr_cfg))),
                  stacked_init(purejaxrl_ppo.make_init(pjr_cfg), init_keys),
                  pjr_cfg["NUM_UPDATES"] * pjr_cfg["NUM_STEPS"] * pjr_cfg["NUM_ENVS"])
    print(f"{env_name}, {seeds} seeds: compiling and running ...", flush=True)
    rows = common.compile_and_time({label: (fn, params) for label, (fn, params, _) in peers.items()}, (keys,),
                                   repeats, ppo.mean_return)
    for label, (_, _, steps) in peers.items():
        rows[label]["env_steps_per_seed"] = steps
    out = []
    for label, row in rows.items():
        med = common.median(row["times_s"])
        out.append({"env": env_name, "peer": label, "seeds": seeds, "median_s": med,
                    "devices": len(split) if label.startswith(OURS) else 1,
                    "env_steps_per_s": seeds * row["env_steps_per_seed"] / med, **row})
    return out


def sb3_run(grid_id: str, total: int, seed: int, ours_cfg: ppo.PPOConfig) -> dict:
    """One SB3 PPO run on MiniGrid with our settings; wall time of ``learn`` and the final return."""
    import gymnasium as gym
    import minigrid  # noqa: F401 - registers the MiniGrid ids
    import torch
    from minigrid.wrappers import FullyObsWrapper, ImgObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)
    steps = ours_cfg.max_steps or ppo.envs.default_max_steps(next(k for k, v in GRID.items() if v == grid_id))

    def make():
        env = ImgObsWrapper(FullyObsWrapper(gym.make(grid_id, max_steps=steps)))
        shape = (int(np.prod(env.observation_space.shape)),)
        env = gym.wrappers.TransformObservation(
            env, lambda o: o.reshape(-1).astype(np.float32) / 10.0,
            gym.spaces.Box(0.0, 25.5, shape, np.float32))
        return Monitor(env)

    vec = DummyVecEnv([make for _ in range(ours_cfg.num_envs)])
    vec.seed(seed)
    lr = ours_cfg.lr
    model = PPO(
        "MlpPolicy", vec, learning_rate=lambda progress: lr * progress, n_steps=ours_cfg.num_steps,
        batch_size=ours_cfg.minibatch_size, n_epochs=ours_cfg.update_epochs, gamma=ours_cfg.gamma,
        gae_lambda=ours_cfg.gae_lambda, clip_range=0.2, clip_range_vf=0.2, ent_coef=ours_cfg.ent_coef,
        vf_coef=ours_cfg.vf_coef, max_grad_norm=ours_cfg.max_grad_norm,
        policy_kwargs={"net_arch": {"pi": [ours_cfg.hidden] * 2, "vf": [ours_cfg.hidden] * 2},
                       "activation_fn": torch.nn.Tanh},
        device="cpu", seed=seed, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=total)
    seconds = time.perf_counter() - start
    # episodes that ended in the last 10% of each env's steps (the JAX peers' rule, over updates)
    per_env = total // ours_cfg.num_envs
    returns = []
    for env in vec.envs:
        ends = np.cumsum(env.get_episode_lengths())
        rewards = np.asarray(env.get_episode_rewards())
        returns += rewards[ends > 0.9 * per_env].tolist()
    return {"seconds": seconds, "env_steps": int(model.num_timesteps),
            "final_return": float(np.mean(returns)) if returns else 0.0, "episodes_counted": len(returns)}


def _sb3_child(barrier, queue, grid_id: str, total: int, seed: int, ours_cfg: ppo.PPOConfig) -> None:
    barrier.wait()  # every process has imported torch/SB3 before any starts learning
    queue.put(sb3_run(grid_id, total, seed, ours_cfg))


def sb3_parallel(grid_id: str, total: int, procs: int, ours_cfg: ppo.PPOConfig) -> dict:
    """``procs`` SB3 runs (seeds 100, 101, ...) in separate processes at once: what SB3 gets from the whole machine."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    children = [ctx.Process(target=_sb3_child, args=(barrier, queue, grid_id, total, 100 + i, ours_cfg))
                for i in range(procs)]
    for child in children:
        child.start()
    runs = [queue.get() for _ in children]
    for child in children:
        child.join()
    return {"procs": procs, "runs": runs, "env_steps": sum(r["env_steps"] for r in runs),
            "wall_s": max(r["seconds"] for r in runs),
            "env_steps_per_s": sum(r["env_steps"] for r in runs) / max(r["seconds"] for r in runs),
            "final_return": float(np.mean([r["final_return"] for r in runs]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="Navix-Empty-5x5-v0", choices=list(GRID))
    parser.add_argument("--grid-timesteps", type=int, default=65_536)
    parser.add_argument("--num-envs", type=int, default=16, help="grid task: envs per seed (all peers)")
    parser.add_argument("--num-steps", type=int, default=128, help="grid task: rollout length (all peers)")
    parser.add_argument("--cartpole-timesteps", type=int, default=131_072)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first (which is timed too)")
    parser.add_argument("--sb3-seeds", type=int, default=1, help="SB3 runs (one seed each); 0 skips SB3")
    parser.add_argument("--sb3-procs", type=int, default=devices.usable_cores(),
                        help="also run this many SB3 seeds at once in separate processes (the whole machine); <2 skips")
    parser.add_argument("--no-cartpole", action="store_true")
    parser.add_argument("--devices", type=int, default=None,
                        help="CPU devices XLA makes, seeds split over them (default: one per core; read before JAX starts)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests)")
    parser.add_argument("--out", default=str(common.RESULTS / "ppo.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.grid_timesteps, args.cartpole_timesteps, args.seeds, args.repeats = 4096, 2048, [1, 2], 0
        args.sb3_seeds, args.sb3_procs = min(args.sb3_seeds, 1), min(args.sb3_procs, 2)

    tasks = [(args.grid, args.grid_timesteps)] + ([] if args.no_cartpole else [("CartPole-v1", args.cartpole_timesteps)])
    rows = []
    for env_name, total in tasks:
        for seeds in args.seeds:
            rows += bench_jax(env_name, total, seeds, args.repeats, args.num_envs, args.num_steps)
    ours_cfg, _ = task_configs(args.grid, args.grid_timesteps, args.num_envs, args.num_steps)
    print(f"SB3 on {GRID[args.grid]}: {args.sb3_seeds} run(s) ...", flush=True)
    sb3 = [sb3_run(GRID[args.grid], ours_cfg.env_steps, seed, ours_cfg) for seed in range(args.sb3_seeds)]
    if sb3:
        med = common.median([r["seconds"] for r in sb3])
        rows.append({"env": args.grid, "peer": "Stable-Baselines3 (MiniGrid, torch CPU)", "seeds": 1,
                     "median_s": med, "env_steps_per_s": sb3[0]["env_steps"] / med, "compile_s": 0.0,
                     "times_s": [r["seconds"] for r in sb3], "env_steps_per_seed": sb3[0]["env_steps"],
                     "final_return_mean": float(np.mean([r["final_return"] for r in sb3])),
                     "final_return_per_seed": [r["final_return"] for r in sb3], "memory_bytes": None,
                     "runs": sb3, "note": "one seed per run, runs one after another"})
    if args.sb3_seeds and args.sb3_procs > 1:
        print(f"SB3 on {GRID[args.grid]}: {args.sb3_procs} processes at once ...", flush=True)
        par = sb3_parallel(GRID[args.grid], ours_cfg.env_steps, args.sb3_procs, ours_cfg)
        rows.append({"env": args.grid, "peer": f"Stable-Baselines3, {par['procs']} processes at once", "seeds": par["procs"],
                     "median_s": par["wall_s"], "env_steps_per_s": par["env_steps_per_s"], "compile_s": 0.0,
                     "times_s": [r["seconds"] for r in par["runs"]], "env_steps_per_seed": par["runs"][0]["env_steps"],
                     "final_return_mean": par["final_return"],
                     "final_return_per_seed": [r["final_return"] for r in par["runs"]], "memory_bytes": None,
                     "runs": par["runs"], "note": "one seed per process; steps/s = all steps / the slowest run's time"})

    summary = {}
    sb3_row = next((r for r in rows if r["peer"].startswith("Stable") and r["seeds"] == 1), None)
    sb3_all = next((r for r in rows if r["peer"].startswith("Stable") and r["seeds"] > 1), None)
    for env_name, _ in tasks:
        for seeds in args.seeds:
            here = [r for r in rows if r["env"] == env_name and r["seeds"] == seeds]
            one = next(r for r in here if r["peer"] == OURS_ONE)
            best = next((r for r in here if r["peer"].startswith(OURS)), one)  # split over devices if it was
            pjr = next(r for r in here if r["peer"] == PJR)
            entry = {"ours_devices": best["devices"],
                     "ours_over_purejaxrl": best["env_steps_per_s"] / pjr["env_steps_per_s"],
                     "ours_one_device_over_purejaxrl": one["env_steps_per_s"] / pjr["env_steps_per_s"],
                     "ours_return": best["final_return_mean"], "purejaxrl_return": pjr["final_return_mean"]}
            if sb3_row and env_name == args.grid:
                entry["ours_over_sb3"] = best["env_steps_per_s"] / sb3_row["env_steps_per_s"]
                entry["ours_one_device_over_sb3"] = one["env_steps_per_s"] / sb3_row["env_steps_per_s"]
                entry["sb3_return"] = sb3_row["final_return_mean"]
                if sb3_all:  # against SB3 using every core (one process per core), the machine-level figure
                    entry["ours_over_sb3_all_cores"] = best["env_steps_per_s"] / sb3_all["env_steps_per_s"]
            summary[f"{env_name}/{seeds}"] = entry

    result = {"benchmark": "ppo", "quick": args.quick, "repeats": args.repeats, "seeds": args.seeds,
              "devices": [str(d) for d in jax.local_devices()],
              "settings": {t: dict(task_configs(t, n, args.num_envs, args.num_steps)[1]) for t, n in tasks},
              "rows": rows, "summary": summary, "machine": common.machine(), "versions": common.versions(),
              "peak_rss_mib": common.peak_rss_bytes() / 2**20}
    print(f"\n## ppo: whole training runs, env steps/s (median of {args.repeats + 1}), {result['machine'].get('device')}\n")
    print(common.table(
        ["env", "peer", "seeds", "devices", "env steps / seed", "compile (s)", "median run (s)", "env steps/s",
         "final return", "memory (MiB)"],
        [[r["env"], r["peer"], r["seeds"], r.get("devices", 1), r["env_steps_per_seed"], r["compile_s"], r["median_s"],
          r["env_steps_per_s"], r["final_return_mean"], common.mib(r["memory_bytes"])] for r in rows]))
    print("\n" + common.table(
        ["env / seeds", "ours devices", "ours / purejaxrl", "ours one device / purejaxrl", "ours / SB3",
         "ours one device / SB3", "ours / SB3 on all cores", "return ours", "return purejaxrl", "return SB3"],
        [[k, v["ours_devices"], v["ours_over_purejaxrl"], v["ours_one_device_over_purejaxrl"], v.get("ours_over_sb3"),
          v.get("ours_one_device_over_sb3"), v.get("ours_over_sb3_all_cores"), v["ours_return"], v["purejaxrl_return"],
          v.get("sb3_return")]
         for k, v in summary.items()]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
