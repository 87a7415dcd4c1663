"""Joint environment steps per second of whole IPPO training runs: the ``marl`` template's kernel against IPPO
written as JaxMARL's ``baselines/IPPO/ippo_ff_mpe.py`` is (``benchmarks/jaxmarl_ippo.py``).

Side by side in one run, on MPE ``simple_spread`` (3 agents), same budget, same hyperparameters (JaxMARL's
``ippo_ff_mpe.yaml``: 16 envs x 128 steps, 4 epochs of 4 minibatches, gamma 0.99, lambda 0.95, clip 0.2, entropy
0.01, value 0.5, grad norm 0.5, annealed lr; value clipping 0.2 on both; the learning rate is ``--lr`` for both,
default 1e-3, the template's, since the yaml's 2.5e-4 is tuned for 1e7 steps) at 1, 8 and 64 seeds: ours with the
seeds split over the local CPU devices (one per core), ours on one device, and the peer as published
(``jit(vmap(train))`` on one device). Both networks are initialised outside ``vmap``. The final return (the
per-agent episodic return, episode-weighted over the last 10% of updates, one rule for both) stands beside each
speed: a faster run that learns less does not count. Compile time is measured apart (``lower().compile()``);
run times are medians of the first run after compiling and ``--repeats`` more, the peers interleaved. Prints
markdown tables and writes ``benchmarks/results/marl.json``.

    .venv/bin/python benchmarks/marl.py            # the comparison
    .venv/bin/python benchmarks/marl.py --quick    # tiny sizes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jaxlib_kernels import devices

if __name__ == "__main__":
    devices.force_cpu_devices()

import common
import jax
import jax.numpy as jnp
import jaxmarl_ippo
import numpy as np

from jaxlib_kernels.ppo import ppo_clip_drift, seed_keys
from jaxlib_kernels.templates.marl import ippo

OURS = "ours (marl/ippo.py)"
OURS_ONE = "ours, one device"
PEER = "JaxMARL-style (ippo_ff_mpe.py)"
CHUNK = 8


def stacked(init, keys):
    init = jax.jit(init)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])


def bench(env_name: str, total: int, seeds: int, repeats: int, lr: float) -> list[dict]:
    ours_cfg = ippo.MARLConfig(env_name=env_name, total_timesteps=total, lr=lr, value_clip=0.2)
    peer_cfg = jaxmarl_ippo.config_of(env_name, total, lr)
    keys, init_keys = seed_keys(np.arange(seeds))
    ours_params = ippo.init_params(ours_cfg, init_keys)
    ours_train = ippo.make_train(ours_cfg, ppo_clip_drift(0.2))
    split = devices.population_devices(seeds)
    peers = {}
    if len(split) > 1:
        peers[f"{OURS}, seeds over {len(split)} devices"] = (devices.population_jit(ours_train, seeds, chunk=CHUNK),
                                                              ours_params)
    peers[OURS_ONE] = (jax.jit(jax.vmap(ours_train)), ours_params)
    peers[PEER] = (jax.jit(jax.vmap(jaxmarl_ippo.make_train(peer_cfg))),
                   stacked(jaxmarl_ippo.make_init(peer_cfg), init_keys))
    steps = ours_cfg.env_steps
    print(f"{env_name}, {seeds} seeds: compiling and running ...", flush=True)
    rows = common.compile_and_time(peers, (keys,), repeats, ippo.mean_over_last)
    out = []
    for label, row in rows.items():
        med = common.median(row["times_s"])
        out.append({"env": env_name, "peer": label, "seeds": seeds, "median_s": med, "env_steps_per_seed": steps,
                    "devices": len(split) if label.startswith(OURS) else 1,
                    "env_steps_per_s": seeds * steps / med, **row})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="MPE_simple_spread_v3")
    parser.add_argument("--timesteps", type=int, default=65_536, help="joint env steps per seed")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the first (which is timed too)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--out", default=str(common.RESULTS / "marl.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.timesteps, args.seeds, args.repeats = 4096, [1, 2], 0

    rows = []
    for seeds in args.seeds:
        rows += bench(args.env, args.timesteps, seeds, args.repeats, args.lr)
    summary = {}
    for seeds in args.seeds:
        here = [r for r in rows if r["seeds"] == seeds]
        one = next(r for r in here if r["peer"] == OURS_ONE)
        best = next((r for r in here if r["peer"].startswith(OURS)), one)
        peer = next(r for r in here if r["peer"] == PEER)
        summary[str(seeds)] = {"ours_devices": best["devices"],
                               "ours_over_peer": best["env_steps_per_s"] / peer["env_steps_per_s"],
                               "ours_one_device_over_peer": one["env_steps_per_s"] / peer["env_steps_per_s"],
                               "ours_return": best["final_return_mean"], "ours_one_device_return": one["final_return_mean"],
                               "peer_return": peer["final_return_mean"]}
    result = {"benchmark": "marl", "quick": args.quick, "env": args.env, "timesteps": args.timesteps,
              "repeats": args.repeats, "lr": args.lr, "devices": [str(d) for d in jax.local_devices()],
              "peer_config": jaxmarl_ippo.config_of(args.env, args.timesteps, args.lr), "rows": rows,
              "summary": summary, "machine": common.machine(), "versions": common.versions(),
              "peak_rss_mib": common.peak_rss_bytes() / 2**20}
    print(f"\n## marl: whole IPPO training runs on {args.env}, joint env steps/s (median of {args.repeats + 1}), "
          f"{result['machine'].get('device')}\n")
    print(common.table(["peer", "seeds", "devices", "env steps / seed", "compile (s)", "median run (s)", "env steps/s",
                        "final return"],
                       [[r["peer"], r["seeds"], r["devices"], r["env_steps_per_seed"], r["compile_s"], r["median_s"],
                         r["env_steps_per_s"], r["final_return_mean"]] for r in rows]))
    print("\n" + common.table(["seeds", "ours devices", "ours / peer", "ours one device / peer", "return ours",
                               "return ours one device", "return peer"],
                              [[k, v["ours_devices"], v["ours_over_peer"], v["ours_one_device_over_peer"],
                                v["ours_return"], v["ours_one_device_return"], v["peer_return"]]
                               for k, v in summary.items()]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
