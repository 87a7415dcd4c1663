"""The dpo template's small-scale analogue of DiscoPOP's IMDb finding: reward and KL per beta, 95% intervals.

Trains every named baseline loss with ``TEMPLATE.evaluate`` (all seeds and the setting's beta sweep in one
compiled call) and prints, per loss and beta, the mean reward of the policy's samples and KL(policy || reference)
at the end of training with 95% t intervals over seeds, then the paired difference of the second loss minus the
first at beta = 0.05. Writes JSON with ``--out``.

    python benchmarks/dpo_frontier.py --losses dpo,lrml --seeds 8 --budget 96 --setting unigram
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", default="dpo,lrml")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--budget", type=int, default=96, help="policy gradient steps")
    parser.add_argument("--setting", default="unigram")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from jaxlib_kernels.templates import make
    from jaxlib_kernels.templates.dpo.figures import ci95

    template = make("dpo")
    setting = template.setting(args.setting)
    seeds = list(range(args.seeds))
    results, rows = {}, []
    for name in args.losses.split(","):
        start = time.time()
        out = template.evaluate(setting, args.budget, template.load(template.baselines[name].source), seeds)
        results[name] = out
        m, c = ci95(out["final"])
        rows.append({"loss": name, "seconds": time.time() - start, "kl_penalised_reward": m, "ci95": c,
                     "ref_reward": float(np.mean(out["ref_reward"])), "betas": []})
        for j, beta in enumerate(out["betas"]):
            r, rc = ci95(out["reward"][:, j])
            k, kc = ci95(out["kl"][:, j])
            rows[-1]["betas"].append({"beta": float(beta), "reward": r, "reward_ci95": rc, "kl": k, "kl_ci95": kc})
    print(f"| loss | beta | reward (95% CI) | KL (95% CI) | setting {args.setting}, {args.budget} steps, "
          f"{args.seeds} seeds |")
    print("|---|---|---|---|---|")
    for row in rows:
        for b in row["betas"]:
            print(f"| {row['loss']} | {b['beta']:g} | {b['reward']:.3f} +/- {b['reward_ci95']:.3f} | "
                  f"{b['kl']:.3f} +/- {b['kl_ci95']:.3f} | |")
        print(f"| {row['loss']} | all | KL-penalised reward {row['kl_penalised_reward']:.3f} +/- {row['ci95']:.3f} "
              f"| SFT samples' reward {row['ref_reward']:.3f} | {row['seconds']:.0f} s |")
    paired = {}
    names = args.losses.split(",")
    if len(names) >= 2 and 0.05 in list(results[names[0]]["betas"]):
        j = list(results[names[0]]["betas"]).index(0.05)
        for key in ("reward", "kl"):
            m, c = ci95(results[names[1]][key][:, j] - results[names[0]][key][:, j])
            paired[key] = {"difference": m, "ci95": c}
            print(f"paired {names[1]} - {names[0]} at beta 0.05: {key} {m:+.3f} +/- {c:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"setting": args.setting, "budget": args.budget, "seeds": args.seeds, "rows": rows,
                       "paired_at_0.05": paired}, f, indent=2)


if __name__ == "__main__":
    main()
