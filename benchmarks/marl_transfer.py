"""The transfer study of issue 14 at small scale: do single-agent drifts carry over to many agents?

DPO (LPO's closed form), the hand-written TA-LPO-style annealed clip (``seed_ideas.json``) and, given a finished
``scientist meta --template lpo`` run folder, its ES-learned TA-LPO drift (the search mean, rendered as plug-in
source as the meta flow does) against PPO clip, unchanged, on ``marl`` settings; 95% t-intervals of each mean and
Welch intervals of the difference to PPO clip (``jaxlib_kernels.stats``). Usage::

    .venv/bin/python benchmarks/marl_transfer.py spread,spread_mappo 65536 4 [out.json [META_RUN_DIR]]
"""
import json
import sys
import time

import numpy as np

from jaxlib_kernels import stats, symbolic
from jaxlib_kernels.templates import make


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    t = make("marl")
    settings = argv[1].split(",")
    budget = int(argv[2])
    seeds = list(range(int(argv[3])))
    seed_ideas = {s["name"]: s["expression"] for s in json.loads((t.text_dir / "seed_ideas.json").read_text())}
    methods = {"ppo_clip": t.baselines["ppo_clip"].source, "dpo": t.baselines["dpo"].source,
               "annealed_clip": symbolic.render_source(seed_ideas["annealed_clip"], "drift", doc="TA-LPO-style clip.")}
    if len(argv) > 5:
        from jaxlib_kernels.templates.lpo.meta import learned_source

        try:
            methods["talpo_es"] = learned_source(argv[5])
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
    out = {}
    for s in settings:
        setting = t.setting(s)
        res = {}
        for m, src in methods.items():
            t0 = time.time()
            r = t.evaluate(setting, budget, t.load(src), seeds)
            res[m] = np.asarray(r["final"], float)
            print(s, m, np.round(res[m], 3), f"{time.time() - t0:.0f}s", flush=True)
        rows = {}
        for m in methods:
            x = res[m]
            test, mean = stats.welch(x, res["ppo_clip"]), stats.summarize(x)
            d, (lo, hi) = test["difference"], test["ci95"]
            p = test["p_value"] if m != "ppo_clip" else 1.0
            ci_m = mean["ci95"][1] - mean["mean"]
            rows[m] = {"final": x.tolist(), "mean": float(x.mean()), "ci95": float(ci_m), "diff_vs_clip": float(d),
                       "diff_ci95": [float(lo), float(hi)], "p": float(p)}
            print(f"{s:13s} {m:14s} mean {x.mean():8.3f} +- {ci_m:.3f}  vs clip {d:+.3f} [{lo:+.3f}, {hi:+.3f}] p={p:.3f}")
        out[s] = rows
    if len(argv) > 4:
        with open(argv[4], "w") as f:
            json.dump({"budget": budget, "seeds": seeds, "meta_run": argv[5] if len(argv) > 5 else None,
                       "results": out}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
