"""EAD experiment of the ``bbo`` template: the small Evolution Transformer (``jaxlib_kernels/optimisers/evotf.py``)
trained by Evolutionary Algorithm Distillation on SNES and OpenES trajectories (the training BBOB functions, 10-D),
then run in context, frozen, on settings it never saw, against its teachers and evosax's shipped ``EvoTF_ES``.

1. Training: ``ead.train`` on the teachers' trajectories (``--train-seeds`` seeds x 8 training functions x
   ``--train-generations``), ``--steps`` Adam steps; the loss (teacher-forced MSE of the mean step and log-std
   change) of every step is kept.
2. Evaluation, held out: each setting is the template's own (``kernel_config``): held-out functions
   (``HELD_OUT_FUNCTIONS``) in 10-D, the training functions in held-out dimensions (30, 5: never used in
   training), both at once (held-out functions in 30-D), and the neuroevolution setting (an MLP policy on gymnax's
   Pendulum-v1, ``neuro.py``). The script checks each setting against the training configuration (no function
   shared unless the dimension differs, and no training dimension unless every function is held out) and stops if
   one is not held out. Evaluation seeds (``--seeds``, from 500) are not the teachers' (0 ..), the
   self-referential rounds' (100 ..) or the offline search's (1000 ..). Methods, all in the kernel's compiled loop
   (``kernel.run_seeds``, seeds x functions in one call; same seed = same instance and initial mean for every
   method): ``evotf_ead`` (ours), its teachers ``snes`` and ``open_es`` (the template's baselines' options), random
   search as the floor, and with ``--evosax-ckpt`` evosax's ``EvoTF_ES`` with its bundled checkpoint
   (``2024_03_SNES_small.pkl``, trained by its authors on their own tasks, so the held-out split is ours, not its),
   on ``--evosax-settings`` (by default not the 30-D ones: there it costs 8x our model's time).
3. ``--self-ref``: self-referential EAD (``ead.self_referential``): from random weights, each round runs the
   model and 4 copies with Gaussian noise (std 0.1) on its weights and trains the model on the best trajectories
   of that pool; every round's model (0 = random weights, which is random search: the head starts at zero) is
   evaluated on ``--self-ref-settings`` with the evaluation seeds. ``--self-ref-steps`` is halved by
   ``self_referential`` (at least 50 steps a round).

Figures: final log10 regret per seed (the template's metric: log10 of the final best regret, floored at 1e-12,
mean over the setting's functions; neuroevolution: log10 of max(-mean return, 0.01)), lower is better. Intervals:
``ead.summary``'s 95% normal-approximation half-width (1.96 s / sqrt(n)); beside it the Student-t half-width
(t_{0.975, n-1} s / sqrt(n), wider at n = 8), and for ``evotf_ead`` minus every other method the paired
difference over seeds with its t interval and the paired t-test's p-value (scipy ``ttest_rel``). Prints markdown
tables and writes ``benchmarks/results/bbo_ead.json`` (``--out``).

    .venv/bin/python benchmarks/bbo_ead.py --self-ref --evosax-ckpt    # the experiment
    .venv/bin/python benchmarks/bbo_ead.py --quick                      # tiny sizes (the script test)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common
import numpy as np
from scipy import stats

from jaxlib_kernels.optimisers.evotf import EvoTF
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.bbo import HELD_OUT_FUNCTIONS, TRAIN_FUNCTIONS, kernel
from jaxlib_kernels.templates.bbo import ead as distillation

EVAL_SEED0 = 500  # teachers use seeds 0 .., self-referential rounds 100 .., the offline search 1000 ..
SETTINGS = ("heldout_fns_d10", "train_fns_d30", "train_fns_d5", "heldout_fns_d30", "neuro_pendulum")
SELF_REF_SETTINGS = ("heldout_fns_d10", "train_fns_d30")
# evosax's EvoTF_ES in our loop took 4.3 s a generation on the 30-D settings (8 seeds x 8 functions, population 24,
# a loaded 2-core CPU) after a 60 s compile, 8x our model: by default it runs on the cheaper settings only
EVOSAX_SETTINGS = ("heldout_fns_d10", "train_fns_d5", "neuro_pendulum")
TEACHER_NAMES = {"SNES": "snes", "Open_ES": "open_es"}
INTERVAL = ("95% intervals: 'ci95' is distillation.summary's normal approximation 1.96 s / sqrt(n); 'ci95_t' the Student-t "
            "half-width t(0.975, n-1) s / sqrt(n); differences are paired over seeds (same instance and initial "
            "mean), t interval and paired t-test (scipy.stats.ttest_rel)")
VERSIONS = ("jax", "jaxlib", "evosax", "optax", "gymnax", "numpy", "scipy")


def t_half(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def describe(values) -> dict:
    """distillation.summary's mean and normal 95% half-width, plus the Student-t half-width and the values."""
    out = distillation.summary({"x": values})["x"]
    return {**out, "ci95_t": t_half(values), "final_per_seed": [float(x) for x in values]}


def paired(a, b) -> dict:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    p = float(stats.ttest_rel(a, b).pvalue) if len(d) > 1 and np.any(d != d[0]) else float("nan")
    return {"mean": float(d.mean()), "ci95_t": t_half(d), "p_paired_t": p, "n": len(d),
            "better_seeds": int(np.sum(d < 0))}


def held_out(name: str, config: kernel.BBOConfig, ead: distillation.EADConfig) -> dict:
    """What makes ``config`` held out against the training configuration ``ead``; raises if nothing does."""
    shared = sorted(set(config.functions) & set(ead.functions))
    new_dim = config.dim != ead.dim
    if shared and not new_dim:
        raise SystemExit(f"{name} is not held out: functions {shared} in the training dimension {ead.dim}")
    kinds = (["functions"] if not shared else []) + (["dimension"] if new_dim else [])
    return {"by": kinds, "functions_in_training": shared, "dim": config.dim, "training_dim": ead.dim,
            "population": config.population, "training_population": ead.population}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="EAD training steps")
    parser.add_argument("--train-generations", type=int, default=60)
    parser.add_argument("--train-seeds", type=int, default=4)
    parser.add_argument("--generations", type=int, default=100, help="evaluation budget (settings scale it)")
    parser.add_argument("--seeds", type=int, default=8, help="evaluation seeds")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--self-ref", action="store_true")
    parser.add_argument("--self-ref-rounds", type=int, default=2)
    parser.add_argument("--self-ref-steps", type=int, default=None, help="default: half of --steps")
    parser.add_argument("--self-ref-settings", nargs="+", default=list(SELF_REF_SETTINGS))
    parser.add_argument("--evosax-ckpt", action="store_true", help="also evosax's EvoTF_ES (bundled checkpoint)")
    parser.add_argument("--evosax-settings", nargs="+", default=list(EVOSAX_SETTINGS),
                        help="the settings EvoTF_ES runs on (with --evosax-ckpt)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--out", default=str(common.RESULTS / "bbo_ead.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    template = make("bbo")
    ead = distillation.EADConfig(functions=TRAIN_FUNCTIONS, steps=args.steps, generations=args.train_generations,
                          seeds=args.train_seeds)
    settings = {}
    for name in args.settings:
        setting = template.setting(name)
        settings[name] = (template.kernel_config(setting, max(1, round(args.generations * setting.budget_scale))),
                          setting.description)
    if args.quick:  # one training function, one teacher, a few steps; two tiny held-out settings
        ead = distillation.EADConfig(functions=("sphere",), generations=10, teachers=("SNES",), seeds=1, steps=5)
        g = min(args.generations, 5)
        settings = {"heldout_pair_d10": (kernel.BBOConfig(("discus", "different_powers"), 10, 16, g),
                                         "two held-out functions in 10 dimensions"),
                    "sphere_d5": (kernel.BBOConfig(("sphere",), 5, 12, g), "the training function in 5 dimensions")}
        args.seeds, args.self_ref_rounds, args.self_ref_settings = min(args.seeds, 2), 1, ["sphere_d5"]
        args.evosax_settings = list(settings)
    eval_seeds = list(range(EVAL_SEED0, EVAL_SEED0 + args.seeds))
    checks = {name: held_out(name, cfg, ead) for name, (cfg, _) in settings.items()}
    assert not set(eval_seeds) & set(range(ead.seeds)), "evaluation seeds overlap the teachers' seeds"

    t = time.perf_counter()
    params, losses = distillation.train(ead)  # cached under .cache/bbo/ by the configuration and the sources
    train_s = time.perf_counter() - t
    model = EvoTF(params, ead.window, "evotf_ead")
    print(f"EAD: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f} ({train_s:.1f} s, 0 if cached)",
          flush=True)
    methods = {"evotf_ead": model}  # then its teachers with the template's baselines' options, and random search
    for name in [TEACHER_NAMES[tn] for tn in ead.teachers] + ["random_search"]:
        methods[name] = template.load(template.baselines[name].source)
    if args.evosax_ckpt:
        methods["evosax_EvoTF_ES"] = kernel.EvosaxSpec("EvoTF_ES")

    results = {}
    for name, (cfg, description) in settings.items():
        rows, finals = {}, {}
        for m, cand in methods.items():
            if m == "evosax_EvoTF_ES" and name not in args.evosax_settings:
                continue
            t = time.perf_counter()
            try:
                finals[m] = distillation.evaluate(cand, cfg, eval_seeds)["final"]
                rows[m] = {**describe(finals[m]), "seconds": time.perf_counter() - t}
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run here reports why
                rows[m] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "seconds": time.perf_counter() - t}
            print(f"  {name} {m}: {rows[m].get('mean', rows[m].get('error'))} ({rows[m]['seconds']:.1f} s)",
                  flush=True)
        diffs = {f"evotf_ead - {m}": paired(finals["evotf_ead"], finals[m]) for m in finals if m != "evotf_ead"}
        results[name] = {"description": description, "config": dataclasses.asdict(cfg), "held_out": checks[name],
                         "methods": rows, "differences": diffs}

    self_ref = None
    if args.self_ref:
        steps = args.self_ref_steps or max(50, args.steps // 2)
        cfg = dataclasses.replace(ead, steps=steps)
        if args.quick:
            cfg = dataclasses.replace(cfg, steps=5)
        evaluations = {n: (settings[n][0], eval_seeds) for n in args.self_ref_settings}
        log: list = []
        t = time.perf_counter()
        _, curve = distillation.self_referential(cfg, rounds=args.self_ref_rounds, evaluations=evaluations, log=log,
                                          perturbations=4, sigma=0.1)
        self_ref = {"rounds": args.self_ref_rounds, "config": dataclasses.asdict(cfg), "seconds":
                    time.perf_counter() - t, "train_curve": curve, "perturbations": 4, "sigma": 0.1,
                    "train_steps_per_round": max(50, cfg.steps // 2),  # self_referential's own rule
                    "train_curve_note": "mean final log10 regret on the training functions: rounds before the last "
                                        "from the model's collected trajectories (seeds 100 ..), the last from an "
                                        "evaluation on seeds 0 ..",
                    "per_round": [{"round": e["round"], "train_log_regret": e["train_log_regret"],
                                   "teacher_log_regret": e["teacher_log_regret"],
                                   "settings": {n: describe(v) for n, v in e["finals"].items()}} for e in log]}
        print(f"self-referential EAD: {len(log)} models in {self_ref['seconds']:.1f} s", flush=True)

    result = {"benchmark": "bbo_ead", "quick": args.quick, "ead_config": dataclasses.asdict(ead),
              "held_out_functions": list(HELD_OUT_FUNCTIONS), "training_functions": list(ead.functions),
              "training": {"seconds": train_s, "steps": len(losses), "loss": [float(x) for x in losses],
                           "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
                           "loss_last_10pct_mean": float(np.mean(losses[-max(1, len(losses) // 10):]))},
              "evaluation": {"seeds": eval_seeds, "generations": args.generations, "interval": INTERVAL,
                             "metric": template.metric.description, "lower_is_better": True,
                             "settings": results},
              "self_referential": self_ref, "machine": common.machine(), "versions": common.versions(VERSIONS),
              "wall_s": time.perf_counter() - start}

    print(f"\n## bbo EAD: the Evolution Transformer, trained on {len(ead.functions)} functions in {ead.dim}-D "
          f"(teachers {', '.join(ead.teachers)}, {ead.seeds} seeds, {ead.generations} generations, {len(losses)} "
          f"steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}), evaluated frozen on held-out settings; final log10 "
          f"regret (lower is better), {len(eval_seeds)} seeds, mean with 95% normal (distillation.summary) and t "
          f"half-widths\n")
    rows = []
    for name, r in results.items():
        for m, row in r["methods"].items():
            rows.append([name, "+".join(r["held_out"]["by"]), r["config"]["generations"], m, row.get("mean"),
                         row.get("ci95"), row.get("ci95_t"), row.get("n"), row["seconds"]]
                        if "error" not in row else [name, "", "", m, row["error"], None, None, None, row["seconds"]])
    print(common.table(["setting", "held out by", "generations", "peer", "mean", "ci95 (normal)", "ci95 (t)", "n",
                        "run (s)"], rows))
    print("\nPaired differences over seeds (evotf_ead minus the method; negative = ours lower regret), t interval, "
          "paired t-test:\n")
    print(common.table(["setting", "peer", "difference", "ci95 (t)", "p", "seeds where ours is lower"],
                       [[name, k.split(" - ")[1], d["mean"], d["ci95_t"], d["p_paired_t"],
                         f"{d['better_seeds']}/{d['n']}"] for name, r in results.items()
                        for k, d in r["differences"].items()]))
    if self_ref:
        print(f"\nSelf-referential EAD ({self_ref['rounds']} rounds of {self_ref['train_steps_per_round']} steps, "
              f"the model and {self_ref['perturbations']} perturbed copies (sigma {self_ref['sigma']}) as the pool "
              f"of teachers): per round, the model's mean final log10 regret on the training functions (and its "
              f"teacher's, the pool's best trajectories) and on "
              f"{', '.join(args.self_ref_settings)} ({len(eval_seeds)} evaluation seeds, normal ci95)\n")
        print(common.table(["round", "peer", "training functions", "teacher"]
                           + [f"{n} mean" for n in args.self_ref_settings]
                           + [f"{n} ci95" for n in args.self_ref_settings],
                           [[e["round"], "evotf self-ref", e["train_log_regret"], e["teacher_log_regret"]]
                            + [e["settings"][n]["mean"] for n in args.self_ref_settings]
                            + [e["settings"][n]["ci95"] for n in args.self_ref_settings]
                            for e in self_ref["per_round"]]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
