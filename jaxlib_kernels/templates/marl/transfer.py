"""The transfer study of issue 14 at small scale: do single-agent drifts carry over to many agents?

DPO (LPO's closed form), the hand-written TA-LPO-style annealed clip (``seed_ideas.json``) and, given a finished
``scientist meta --template lpo`` run folder, its ES-learned TA-LPO drift (the search mean, rendered as plug-in
source as the meta flow does) against PPO clip, unchanged, on ``marl`` settings; 95% t-intervals of each mean and
Welch intervals of the difference to PPO clip. Usage::

    python -m jaxlib_kernels.templates.marl.transfer spread,spread_mappo 65536 4 [out.json [META_RUN_DIR]]
"""
import json
import sys
import time

import numpy as np
from scipy import stats

from jaxlib_kernels import symbolic
from jaxlib_kernels.templates import make


def learned_talpo_source(meta_run_dir: str) -> str:
    """The ES-learned TA-LPO drift of a finished lpo meta-run (its search mean), as plug-in source."""
    from pathlib import Path

    import jax

    from jaxlib_kernels.es import problems, talpo
    from tasks import meta_es

    search = Path(meta_run_dir) / "searches" / "talpo"
    if not search.is_dir():
        raise SystemExit(f"{meta_run_dir}: no TA-LPO search (searches/talpo) in this folder")
    net = problems.drift_net(problems.problem_spec("lpo"))
    theta = meta_es.load_candidate(str(search), talpo.init_drift_params(jax.random.key(0), net))
    return talpo.render_source(theta, net)


def main(argv: list[str]) -> None:
    t = make("marl")
    settings = argv[1].split(",")
    budget = int(argv[2])
    seeds = list(range(int(argv[3])))
    seed_ideas = {s["name"]: s["expression"] for s in json.loads((t.text_dir / "seed_ideas.json").read_text())}
    methods = {"ppo_clip": t.baselines["ppo_clip"].source, "dpo": t.baselines["dpo"].source,
               "annealed_clip": symbolic.render_source(seed_ideas["annealed_clip"], "drift", doc="TA-LPO-style clip.")}
    if len(argv) > 5:
        methods["talpo_es"] = learned_talpo_source(argv[5])
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
            x, y = res[m], res["ppo_clip"]
            d = x.mean() - y.mean()
            vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
            se = np.sqrt(vx + vy)
            dof = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1)) if se > 0 else len(x) - 1
            h = stats.t.ppf(0.975, dof) * se
            p = stats.ttest_ind(x, y, equal_var=False).pvalue if m != "ppo_clip" else 1.0
            ci_m = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            rows[m] = {"final": x.tolist(), "mean": float(x.mean()), "ci95": float(ci_m), "diff_vs_clip": float(d),
                       "diff_ci95": [float(d - h), float(d + h)], "p": float(p)}
            print(f"{s:13s} {m:14s} mean {x.mean():8.3f} +- {ci_m:.3f}  vs clip {d:+.3f} [{d - h:+.3f}, {d + h:+.3f}] p={p:.3f}")
        out[s] = rows
    if len(argv) > 4:
        with open(argv[4], "w") as f:
            json.dump({"budget": budget, "seeds": seeds, "meta_run": argv[5] if len(argv) > 5 else None,
                       "results": out}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
