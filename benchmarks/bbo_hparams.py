"""A small hyperparameter search of PPO on a NAVIX grid with the sequence optimisers of ``jaxlib_kernels/optimisers``,
side by side on one interface, one space, the same seeds and the same budget.

The space (``benchmarks/ppo_hparams.py``): learning rate (log-continuous, 1e-4 to 3e-2), PPO clip
epsilon (0.05 to 0.5, used by the clip drift), update epochs (integer, ``--epochs``), and the drift (categorical:
PPO's clip, LPO's DPO closed form, none). Fitness: minus PPO's mean return over the last tenth of training,
averaged over ``--ppo-seeds`` seeds, at ``--budget`` environment steps on the ``lpo`` template's setting
(``--setting``, Empty-5x5 by default) with the ``lpo`` PPO configuration otherwise.

The optimisers (``sequence.minimise``: each generation sampled from N(mean, std) in the latent box, decoded,
evaluated; start at the centre with std ``--std0``; the same ``numpy`` seed per search seed, so every method's
first generation is the same): the EAD-trained Evolution Transformer (``evotf.pretrained()``, the weights the
library ships, trained on BBOB by the bbo template's ``ead.py``, not on this problem; through ``EvoTFOptimiser``),
random search (the first generation's distribution throughout), SNES, and EvoLLM with ``--model`` (through the
project's LLM backend, litellm: ``tasks.tuning.llm_complete``; without a model it is skipped with one line).
Evaluations of a configuration already trained are looked up, not trained again (a configuration's fitness
does not depend on the search: the seeds are fixed). Every search's best configuration is then trained again on
``--heldout-seeds`` other seeds (100, 101, ...): the search's figure is picked on its own seeds, so the held-out
return is the honest one. A reference row: the ``lpo`` default (lr 2.5e-3, clip 0.2, 4 epochs, PPO clip).

Prints markdown tables, writes ``benchmarks/results/bbo_hparams.json`` and the tables beside it (``.md``).

    .venv/bin/python benchmarks/bbo_hparams.py                 # the comparison (no EvoLLM without a model)
    .venv/bin/python benchmarks/bbo_hparams.py --model openai/gpt-4o-mini
    .venv/bin/python benchmarks/bbo_hparams.py --quick         # tiny sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common
import numpy as np
import ppo_hparams as hparams

from jaxlib_kernels import optimisers
from jaxlib_kernels.optimisers import evollm, evotf
from tasks.tuning import llm_complete

VERSIONS = ("jax", "jaxlib", "navix", "optax", "flax", "numpy", "litellm")
DEFAULT = {"lr": 2.5e-3, "clip_eps": 0.2, "update_epochs": 4, "drift": "ppo_clip"}  # lpo's PPO


def _key(config: dict) -> tuple:
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in config.items()))


class Cached:
    """The fitness with a table of configurations already trained (the same configuration, the same value)."""

    def __init__(self, problem: hparams.PPOHparams):
        self.problem, self.table, self.calls = problem, {}, 0

    def __call__(self, configs):
        self.calls += len(configs)
        for c in configs:
            if _key(c) not in self.table:
                self.table[_key(c)] = float(self.problem([c])[0])
        return np.asarray([self.table[_key(c)] for c in configs])


def heldout(problem: hparams.PPOHparams, config: dict, seeds: list[int]) -> float:
    """Mean return of ``config`` on ``seeds``, trained in chunks of the fitness's seed count (one program)."""
    n = len(problem.seeds)
    return float(np.mean(np.concatenate([problem.returns(config, seeds[i:i + n]) for i in range(0, len(seeds), n)])))


def make_optimisers(args) -> tuple[dict, dict]:
    """name -> a factory of a fresh optimiser; and the notes (model load time, EvoLLM's skip reason)."""
    start = time.perf_counter()
    model = evotf.pretrained()
    notes = {"evotf_model": model.name, "evotf_load_or_train_s": time.perf_counter() - start}
    library = {"evotf_ead": "evotf", "random_search": "random", "snes": "snes"}  # this study's names: the library's
    made = {k: lambda name=name: optimisers.make(name, model=model) for k, name in library.items() if k in args.methods}
    if args.model:
        try:
            complete = llm_complete(args.model)
        except evollm.NoModel as exc:
            notes["evollm_skipped"] = str(exc)
        else:
            made["evollm"] = lambda: optimisers.make("evollm", complete=complete, population=args.population,
                                                     std0=args.std0)
    else:
        notes["evollm_skipped"] = "EvoLLM skipped: no --model given (it needs a language model)"
    return made, notes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="empty5", help="an lpo template setting (its NAVIX grid)")
    parser.add_argument("--budget", type=int, default=16_384, help="PPO environment steps per evaluation")
    parser.add_argument("--ppo-seeds", type=int, default=2, help="PPO seeds per evaluation (fitness: their mean)")
    parser.add_argument("--heldout-seeds", type=int, default=4, help="seeds the best configurations are re-trained on")
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--population", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3, help="search seeds per method")
    parser.add_argument("--std0", type=float, default=0.5, help="initial std in the latent box [-1, 1]")
    parser.add_argument("--epochs", type=int, nargs=2, default=[1, 4], metavar=("LOW", "HIGH"),
                        help="update epochs' range (each value compiles one PPO program)")
    parser.add_argument("--methods", nargs="+", default=["evotf_ead", "random_search", "snes"])
    parser.add_argument("--model", default=None, help="an LLM (litellm name) for EvoLLM; without one it is skipped")
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--out", default=str(common.RESULTS / "bbo_hparams.json"))
    args = parser.parse_args(argv)
    overrides = {}
    if args.quick:
        args.budget, args.ppo_seeds, args.heldout_seeds = hparams.TINY_BUDGET, 2, 2
        args.generations, args.population, args.seeds, args.epochs = 2, 4, 1, [1, 1]
        overrides = dict(hparams.TINY)
    if args.heldout_seeds % args.ppo_seeds:
        parser.error("--heldout-seeds must be a multiple of --ppo-seeds (they are trained in chunks of that size)")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    space = hparams.space(tuple(args.epochs))
    problem = hparams.PPOHparams(args.setting, args.budget, range(args.ppo_seeds), overrides, space)
    fitness = Cached(problem)
    heldout_seeds = list(range(100, 100 + args.heldout_seeds))
    made, notes = make_optimisers(args)
    if "evollm_skipped" in notes:
        print(notes["evollm_skipped"])

    reference = DEFAULT if space.valid(DEFAULT) else {**DEFAULT, "update_epochs": args.epochs[1]}
    t0 = time.perf_counter()
    ref = {"config": reference, "return": -float(fitness([reference])[0]),
           "heldout_return": heldout(problem, reference, heldout_seeds)}
    ref["s"] = time.perf_counter() - t0

    runs = {}
    for name, make in made.items():
        runs[name] = []
        for seed in range(args.seeds):
            t0, before = time.perf_counter(), len(fitness.table)
            opt = make()
            res = optimisers.minimise(opt, fitness, space, args.generations, args.population, seed, std0=args.std0)
            search_s = time.perf_counter() - t0
            runs[name].append({
                "seed": seed, "curve_return": (-res["best"]).tolist(), "best_config": res["best_config"],
                "best_return": -res["best_fitness"], "first_generation_best_return": -float(res["best"][0]),
                "heldout_return": heldout(problem, res["best_config"], heldout_seeds),
                "new_trainings": len(fitness.table) - before, "search_s": search_s, "repairs": res["repairs"],
                "fallbacks": list(getattr(opt, "fallbacks", [])),
                "drifts_tried": sorted({c["drift"] for pop, _ in res["history"] for c in space.decode_many(pop)})})
            print(f"  {name} seed {seed}: best return {-res['best_fitness']:.3f} ({search_s:.1f} s) "
                  f"{res['best_config']}", flush=True)

    def ci(xs):
        xs = np.asarray(xs, dtype=np.float64)
        return float(1.96 * xs.std(ddof=1) / np.sqrt(len(xs))) if len(xs) > 1 else float("nan")

    summary = {name: {"best_return_mean": float(np.mean([r["best_return"] for r in rs])),
                      "best_return_ci95": ci([r["best_return"] for r in rs]),
                      "heldout_return_mean": float(np.mean([r["heldout_return"] for r in rs])),
                      "heldout_return_ci95": ci([r["heldout_return"] for r in rs]),
                      "curve_return_mean": np.mean([r["curve_return"] for r in rs], axis=0).tolist(),
                      "search_s_total": float(sum(r["search_s"] for r in rs)),
                      "fallbacks": sum(len(r["fallbacks"]) for r in rs)} for name, rs in runs.items()}
    result = {"benchmark": "bbo_hparams", "quick": args.quick, "started_utc": started, "setting": args.setting,
              "env": problem.base.env_name, "budget_env_steps": problem.base.env_steps, "ppo_seeds": args.ppo_seeds,
              "heldout_seeds": heldout_seeds, "generations": args.generations, "population": args.population,
              "search_seeds": args.seeds, "std0": args.std0, "space": [dataclasses.asdict(p) for p in space.params],
              "ppo_config": {k: v for k, v in dataclasses.asdict(problem.base).items()}, "notes": notes,
              "reference": ref, "runs": runs, "summary": summary, "unique_trainings": len(fitness.table),
              "fitness_calls": fitness.calls, "trainings_total": problem.evaluations, "machine": common.machine(),
              "versions": common.versions(VERSIONS), "peak_rss_mib": common.peak_rss_bytes() / 2**20}

    heading = (f"## bbo hparams: PPO on {problem.base.env_name}, {problem.base.env_steps} env steps, fitness = "
               f"-mean return over {args.ppo_seeds} seeds; {args.generations} generations x {args.population}, "
               f"{args.seeds} search seeds, held-out return on {len(heldout_seeds)} other seeds "
               f"(mean, 95% normal half-width over search seeds)")
    ref_label = (f"reference: lpo's PPO (lr {reference['lr']:g}, clip {reference['clip_eps']:g}, "
                 f"{reference['update_epochs']} epochs)")
    table = common.table(
        ["optimiser", "best return (search seeds)", "ci95", "held-out return of the best", "ci95",
         "first generation's best", "search (s)", "fallbacks / repairs"],
        [[name, s["best_return_mean"], s["best_return_ci95"], s["heldout_return_mean"], s["heldout_return_ci95"],
          float(np.mean([r["first_generation_best_return"] for r in runs[name]])), s["search_s_total"],
          f"{s['fallbacks']} / {sum(len(r['repairs']) for r in runs[name])}"] for name, s in summary.items()]
        + [[ref_label, ref["return"], None, ref["heldout_return"], None, None, None, None]])
    curves = common.table(["optimiser", *[f"g{g}" for g in range(args.generations)]],
                          [[name, *s["curve_return_mean"]] for name, s in summary.items()])
    best = common.table(["optimiser", "seed", "lr", "clip eps", "epochs", "drift", "return", "held-out"],
                        [[name, r["seed"], f"{r['best_config']['lr']:.2e}", r["best_config"]["clip_eps"],
                          r["best_config"]["update_epochs"], r["best_config"]["drift"], r["best_return"],
                          r["heldout_return"]] for name, rs in runs.items() for r in rs])
    skipped = f"\n{notes['evollm_skipped']}\n" if "evollm_skipped" in notes else ""
    text = (f"{heading}\n\n{table}\n\nBest-so-far return per generation (mean over search seeds)\n\n{curves}\n\n"
            f"Best configurations\n\n{best}\n{skipped}\n{len(fitness.table)} distinct configurations trained "
            f"({fitness.calls} evaluations asked); Evolution Transformer {notes['evotf_model']} loaded or trained in "
            f"{notes['evotf_load_or_train_s']:.1f} s; started {started}, load average at start "
            f"{result['machine'].get('load_avg_at_start')}\n")
    print("\n" + text)
    out = common.write(result, args.out)
    out.with_suffix(".md").write_text(text)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
