"""Where a PPO training run's time goes, and what the XLA:CPU switches and the device split change.

Our PPO (``jaxlib_kernels.ppo``) on Navix-Empty-5x5 (``--env``; ``--quick``: gymnax CartPole-v1) with the
pipeline's settings (16 envs x 128 steps, 4 epochs x 4 minibatches, 65,536 env steps per seed), on this machine:
1. the split of one seed's run time between the rollout (env steps, policy forward, GAE) and the update epochs,
   from runs with 1, 2 and 4 update epochs (``--quick``: 1 and 4); a least-squares line, time = rollout + epochs x
   epoch cost, through medians over the rounds;
2. env steps/s under XLA:CPU flags, each in a fresh interpreter (XLA reads ``XLA_FLAGS`` once), 1 and 8 seeds;
3. the 8 seeds split over one CPU device per core (``jaxlib_kernels.devices``), against one device.
A child's figure is the median of ``--repeats`` runs after compiling; all three run in ``--rounds`` interleaved
rounds (every variant once a round) and report the median over rounds. Prints markdown tables, writes
``benchmarks/results/ppo_profile.json``.

    .venv/bin/python benchmarks/ppo_profile.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CHUNK = 8  # seeds vmapped at once on each device (benchmarks/ppo.py uses the same)
VARIANTS = {
    "baseline": "",
    "Eigen single-threaded": "--xla_cpu_multi_thread_eigen=false",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "concurrency-optimised scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}


def child(seeds: list[int], total: int, repeats: int, epochs: list[int], split: bool, env_name: str) -> dict:
    """Runs inside the fresh interpreter: times ``jit(vmap(train))`` for each seed count and epoch count."""
    import common
    import jax
    import numpy as np

    from jaxlib_kernels import devices, ppo

    out = []
    for n in seeds:
        for e in epochs:
            config = ppo.PPOConfig(env_name=env_name, total_timesteps=total, update_epochs=e)
            keys, init_keys = ppo.seed_keys(np.arange(n))
            params = ppo.init_params(config, init_keys)
            train = ppo.make_train(config)
            fn = devices.population_jit(train, n, chunk=CHUNK) if split else jax.jit(jax.vmap(train))
            start = time.perf_counter()
            compiled = fn.lower(keys, params).compile()
            compile_s = time.perf_counter() - start
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = jax.block_until_ready(compiled(keys, params))
                times.append(time.perf_counter() - start)
            median = common.median(times)
            out.append({"seeds": n, "update_epochs": e, "compile_s": compile_s, "times_s": times, "median_s": median,
                        "env_steps_per_s": n * config.env_steps / median,
                        "final_return": float(ppo.mean_return(jax.tree_util.tree_map(np.asarray, result["metrics"])).mean()),
                        "devices": len(devices.population_devices(n)) if split else 1})
    return {"rows": out, "local_devices": len(jax.local_devices())}


def run_child(flags: str, seeds: list[int], total: int, repeats: int, epochs: list[int], device_count: int = 1,
              split: bool = False, env_name: str = "Navix-Empty-5x5-v0") -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in [flags, f"--xla_force_host_platform_device_count={device_count}"] if f)
    cmd = [sys.executable, __file__, "--child", json.dumps({"seeds": seeds, "total": total, "repeats": repeats,
                                                            "epochs": epochs, "split": split,
                                                            "env": env_name})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--timesteps", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs in each child (after compiling)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants (XLA flags, split)")
    parser.add_argument("--seeds", type=int, default=8, help="population size of the multi-seed rows")
    parser.add_argument("--env", default=None, help="environment id (default: Navix-Empty-5x5-v0; --quick: CartPole-v1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and gymnax CartPole, which compiles in a fraction of navix's time (the tests)")
    parser.add_argument("--out", default=str(HERE / "results" / "ppo_profile.json"))
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(child(spec["seeds"], spec["total"], spec["repeats"], spec["epochs"], spec["split"], spec["env"])))
        return {}
    import common

    from jaxlib_kernels import devices

    variants = VARIANTS
    epochs = [1, 2, 4]
    if args.quick:
        args.timesteps, args.repeats, args.seeds, args.rounds = 16_384, 1, 2, 1  # CartPole: a few ms per update
        variants = {"baseline": VARIANTS["baseline"]}
        epochs = [1, 4]  # two points fix the line; each epoch count is a compile
    env_name = args.env or ("CartPole-v1" if args.quick else "Navix-Empty-5x5-v0")
    cores = devices.usable_cores()

    def fit_breakdown(rows: list[dict]) -> dict:
        """time = rollout + epochs x epoch cost, least squares over the epoch counts."""
        import numpy as np

        e = np.array([r["update_epochs"] for r in rows], float)
        t = np.array([r["median_s"] for r in rows], float)
        epoch_s, rollout_s = np.polyfit(e, t, 1)
        at4 = next(r for r in rows if r["update_epochs"] == 4)
        return {"rollout_s": float(rollout_s), "epoch_s": float(epoch_s),
                "update_share_at_4_epochs": float(4 * epoch_s / (rollout_s + 4 * epoch_s)),
                "time_at_4_epochs_s": at4["median_s"]}

    print(f"rollout against update epochs (1 seed), XLA:CPU flags (1 and {args.seeds} seeds, one device) and the device split, "
          f"{args.rounds} interleaved rounds ...", flush=True)
    # Each round runs every variant once, in a fresh interpreter: a machine that slows down for a while then
    # slows all variants of that round alike, and the median over rounds is compared.
    runs: dict[str, list[dict]] = {name: [] for name in ["breakdown", *variants, "split"]}
    for round_ in range(args.rounds):
        runs["breakdown"].append(run_child("", [1], args.timesteps, args.repeats, epochs, env_name=env_name))
        for name, flags in variants.items():
            runs[name].append(run_child(flags, [1, args.seeds], args.timesteps, args.repeats, [4], env_name=env_name))
        runs["split"].append(run_child("", [args.seeds], args.timesteps, args.repeats, [4], device_count=cores,
                                       split=True, env_name=env_name))
        print(f"  round {round_ + 1}: " + ", ".join(
            f"{name} " + ("error" if "error" in rs[-1] else "/".join(f"{r['env_steps_per_s'] / 1e3:.0f}k" for r in rs[-1]["rows"]))
            for name, rs in runs.items()), flush=True)

    def merged(name: str, flags: str) -> dict:
        """Median over rounds, per seed count; the error of the first failed round if any failed."""
        failed = [r for r in runs[name] if "error" in r]
        if failed:
            return {"flags": flags, "error": failed[0]["error"]}
        out = []
        for i, first in enumerate(runs[name][0]["rows"]):
            speeds = [r["rows"][i]["env_steps_per_s"] for r in runs[name]]
            times = [r["rows"][i]["median_s"] for r in runs[name]]
            out.append({**first, "env_steps_per_s": common.median(speeds), "median_s": common.median(times),
                        "rounds_env_steps_per_s": speeds})
        return {"flags": flags, "rows": out, "local_devices": runs[name][0]["local_devices"]}

    flag_rows = {name: merged(name, flags) for name, flags in variants.items()}
    split = merged("split", "")
    breakdown = merged("breakdown", "")
    rows = breakdown.get("rows", [])
    if rows:
        breakdown["fit"] = fit_breakdown(rows)
    base = {r["seeds"]: r["env_steps_per_s"] for r in flag_rows["baseline"].get("rows", [])}

    result = {"benchmark": "ppo_profile", "quick": args.quick, "env": env_name, "timesteps": args.timesteps, "repeats": args.repeats,
              "rounds": args.rounds,
              "breakdown": breakdown, "flags": flag_rows, "split": split, "cores": cores,
              "machine": common.machine(), "versions": common.versions()}

    print(f"\n## ppo_profile: where one seed's time goes ({env_name}, {args.timesteps} steps, median over {args.rounds} rounds)\n")
    print(common.table(["update epochs", "run (s)", "env steps/s", "final return"],
                       [[r["update_epochs"], r["median_s"], r["env_steps_per_s"], r["final_return"]] for r in rows]))
    if "fit" in breakdown:
        f = breakdown["fit"]
        print(f"\nfit: rollout + GAE {f['rollout_s']:.3f} s, one update epoch {f['epoch_s']:.3f} s; "
              f"the 4 update epochs are {100 * f['update_share_at_4_epochs']:.0f}% of the run")
    print(f"\n## XLA:CPU flags, env steps/s (one device; median over {args.rounds} rounds)\n")
    table = []
    for name, row in flag_rows.items():
        if "error" in row:
            table.append([name, row["flags"] or "-", "error", "", "", row["error"]])
            continue
        for r in row["rows"]:
            table.append([name, row["flags"] or "-", r["seeds"], r["env_steps_per_s"],
                          r["env_steps_per_s"] / base[r["seeds"]] if r["seeds"] in base else None, r["final_return"]])
    print(common.table(["variant", "XLA_FLAGS", "seeds", "env steps/s", "x baseline", "final return"], table))
    if "rows" in split:
        r = split["rows"][0]
        print(f"\n## {args.seeds} seeds split over {r['devices']} CPU devices\n")
        print(common.table(["peer", "seeds", "devices", "env steps/s", "x one device", "final return"], [
            ["one device", args.seeds, 1, base.get(args.seeds), 1.0,
             next(x["final_return"] for x in flag_rows["baseline"]["rows"] if x["seeds"] == args.seeds)],
            ["split over devices", args.seeds, r["devices"], r["env_steps_per_s"],
             r["env_steps_per_s"] / base[args.seeds] if args.seeds in base else None, r["final_return"]]]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
