"""Headroom of the ``dpo`` settings: DPO's reward and KL at each profile's budget against the reward's ceiling.

A setting on which DPO already reaches the best possible reward cannot show a better loss. For each setting and
budget, the named losses (default DPO) train with ``TEMPLATE.evaluate`` (every seed and every beta of the
setting's sweep in one compiled call, seeds 0, 1, ...). Per beta: the mean reward of the policy's samples and
KL(policy || reference) at the end of training with 95% t intervals over seeds, the SFT model's own reward, and
the share of the headroom used, ``(reward - SFT reward) / (ceiling - SFT reward)``. The ceiling is 1 for both
rewards, and it is reachable: ``unigram``'s token values are a permutation of ``linspace(0, 1, vocab)`` (a
completion of the best token scores 1), ``bigram`` scores 1 on a completion that counts up by one. Prints a
markdown table and writes ``benchmarks/results/dpo_settings.json``.

    .venv/bin/python benchmarks/dpo_settings.py            # every setting at the profiles' budgets, 8 seeds
    .venv/bin/python benchmarks/dpo_settings.py --quick    # tiny sizes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import RESULTS, machine, table, versions, write

CEILING = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="unigram,unigram_betas,bigram,wide")
    parser.add_argument("--budgets", default=None,
                        help="comma-separated policy gradient steps (default: the profiles' budgets)")
    parser.add_argument("--losses", default="dpo")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: 2 seeds, 8 steps, the first setting")
    parser.add_argument("--out", default=str(RESULTS / "dpo_settings.json"))
    args = parser.parse_args()

    from jaxlib_kernels.templates import make
    from jaxlib_kernels.templates.dpo.figures import ci95

    template = make("dpo")
    budgets = sorted({p.budget for p in template.profiles.values()})
    if args.budgets:
        budgets = [int(b) for b in args.budgets.split(",")]
    names = args.settings.split(",")
    seeds = args.seeds
    if args.quick:
        names, budgets, seeds = names[:1], [8], 2
    profiles_of = {b: [p.name for p in template.profiles.values() if p.budget == b] for b in budgets}
    rows, printed = [], []
    for name in names:
        setting = template.setting(name)
        for budget in budgets:
            for loss in args.losses.split(","):
                start = time.time()
                out = template.evaluate(setting, budget, template.load(template.baselines[loss].source),
                                        list(range(seeds)))
                seconds = time.time() - start
                sft = float(np.mean(out["ref_reward"]))
                head, head_ci = ci95(out["final"])
                row = {"setting": name, "held_out": setting.held_out, "budget": budget, "loss": loss,
                       "profiles": profiles_of.get(budget, []), "seeds": seeds, "sft_reward": sft,
                       "ceiling": CEILING, "kl_penalised_reward": head, "kl_penalised_reward_ci95": head_ci,
                       "seconds": seconds, "betas": []}
                for j, beta in enumerate(out["betas"]):
                    r, rc = ci95(out["reward"][:, j])
                    k, kc = ci95(out["kl"][:, j])
                    used = (out["reward"][:, j] - sft) / (CEILING - sft)
                    row["betas"].append({"beta": float(beta), "reward": r, "reward_ci95": rc, "kl": k, "kl_ci95": kc,
                                         "headroom_used": float(np.mean(used)),
                                         "reward_per_seed": out["reward"][:, j].tolist()})
                    printed.append([name + (" (held out)" if setting.held_out else ""), budget, loss, f"{beta:g}",
                                    f"{r:.3f} +/- {rc:.3f}", f"{k:.2f} +/- {kc:.2f}", f"{sft:.3f}",
                                    f"{np.mean(used):.2f}"])
                best = max(row["betas"], key=lambda b: b["reward"])
                row["best_beta"] = best["beta"]
                row["best_reward_over_ceiling"] = best["reward"] / CEILING
                rows.append(row)
                print(f"{name} {budget} steps {loss}: best reward {best['reward']:.3f} at beta {best['beta']:g} "
                      f"({seconds:.0f} s)", flush=True)
    print()
    print(table(["setting", "steps", "loss", "beta", "reward (95% CI)", "KL nats (95% CI)", "SFT reward",
                 "headroom used"], printed))
    path = write({"rows": rows, "ceiling": CEILING, "machine": machine(), "versions": versions()}, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
