"""The discovery engine's evaluation speed: a population of symbolic drifts through the interpreter against one XLA
compile per candidate, and the interpreter's cost per training step against a hard-coded drift.

Side by side in one run, on the same candidates (the lpo baselines and variants of them), the same seeds and the
same budget (``Navix-Empty-5x5-v0``, PPO at the lpo template's settings):

* **compile per candidate** (today's path for a candidate given only as source): every candidate's rendered
  source is loaded as a plug-in, hidden from the interpreter, and trained with ``ppo.train_seeds``; each is a new
  program, so each costs a compile and a run.
* **interpreter population**: all candidates x seeds in one ``ppo.train_programs`` call (one compile); timed cold
  (first generation, compile included) and warm (a second generation with other constants: what every later
  generation of a search costs).

Both give real fitness (the final return of PPO training); the table shows that the two paths agree on it.
Per training step: PPO with the hard-coded clip drift (``ppo.ppo_clip_drift``) against PPO with the clip
expression through the interpreter, same seeds, warm, median of ``--repeats``. The persistent compilation cache
is switched off so that every compile is paid. Prints a markdown table, writes ``benchmarks/results/discovery.json``.

    .venv/bin/python benchmarks/discovery.py                 # 2 generations of 16 candidates x 2 seeds, 16 k steps
    .venv/bin/python benchmarks/discovery.py --quick         # 4 candidates x 2 seeds, tiny PPO
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common
import jax
import numpy as np

from jaxlib_kernels import interpreter, ppo, symbolic
from jaxlib_kernels.plugin import load_plugin
from jaxlib_kernels.search.drift import DPO, EXPRESSIONS, KL, PPO_CLIP


def candidates(n: int) -> list:
    """``n`` distinct drifts: the lpo baselines, then retuned and progress-scheduled variants of them."""
    pool = [PPO_CLIP, DPO, KL]
    for eps in (0.1, 0.3, 0.15, 0.25, 0.05, 0.4):
        pool.append(["relu", ["mul", ["sub", "r", ["clip", "r", 1.0 - eps, 1.0 + eps]], "A"]])
        pool.append(["mul", ["sub", 1.0, "p"], ["relu", ["mul", ["sub", "r", ["clip", "r", 1 - eps, 1 + eps]], "A"]]])
    pool.append(EXPRESSIONS["no_drift"])
    return pool[:n]


def retuned(exprs: list, factor: float) -> list:
    """The same formulas with every constant outside a clip scaled (a second generation's constants)."""
    def walk(e, in_clip=False):
        if isinstance(e, float):
            return e if in_clip else round(e * factor, 6)
        if isinstance(e, list):
            return [e[0], *[walk(a, in_clip or e[0] == "clip") for a in e[1:]]]
        return e
    return [walk(e) for e in exprs]


def hidden(expr):
    """The rendered plug-in of ``expr``, wrapped so the interpreter does not recognise it (a source candidate)."""
    fn = load_plugin(symbolic.render_source(expr, "drift"), "drift")
    return lambda ratio, advantage, progress: fn(ratio, advantage, progress)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=16, help="a generation (scientist discover: 16)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per candidate (scientist discover: 2)")
    parser.add_argument("--budget", type=int, default=16_384, help="env steps (scientist discover: 16384)")
    parser.add_argument("--generations", type=int, default=2, help="generations of new formulas on both paths")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(common.RESULTS / "discovery.json"))
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is paid, on both paths
    if args.quick:
        args.candidates, args.seeds, args.repeats, args.generations = 4, 2, 1, 2
        config = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2)
    else:
        config = ppo.PPOConfig(total_timesteps=args.budget)
    seeds = list(range(args.seeds))
    exprs = candidates(args.candidates)
    length = max(interpreter.length_of(e) for e in exprs)

    # generation g's formulas: the candidates with their constants scaled by 1 + g / 2 (new formulas, same shapes)
    generations = [exprs] + [retuned(exprs, 1 + g / 2) for g in range(1, args.generations)]

    # (a) compile per candidate: every formula of every generation is a new program
    per_generation_compiled, per_candidate = [], None
    for g, gen in enumerate(generations):
        start = time.perf_counter()
        finals = [ppo.mean_return(ppo.train_seeds(config, hidden(e), seeds)) for e in gen]
        per_generation_compiled.append(time.perf_counter() - start)
        per_candidate = finals if g == 0 else per_candidate
    compiled_s = per_generation_compiled[0]

    # (b) interpreter population: generation 0 cold (compile included), the later ones warm
    per_generation_interp, pop = [], None
    for g, gen in enumerate(generations):
        start = time.perf_counter()
        finals = ppo.mean_return(ppo.train_programs(config, interpreter.encode_population(gen, length), seeds))
        per_generation_interp.append(time.perf_counter() - start)
        pop = finals if g == 0 else pop
    cold_s = per_generation_interp[0]
    warm_s = common.median(per_generation_interp[1:]) if len(generations) > 1 else float("nan")
    agree = float(np.max(np.abs(np.stack(per_candidate) - pop)))
    search_compiled, search_interp = sum(per_generation_compiled), sum(per_generation_interp)

    # (c) cost per training step: hard-coded clip against the interpreted clip, same seeds, warm
    clip = interpreter.encode_population([PPO_CLIP], length)
    hard_drift = ppo.ppo_clip_drift()
    ppo.train_seeds(config, hard_drift, seeds)
    ppo.train_programs(config, clip, seeds)
    hard, interp = [], []
    for _ in range(args.repeats):  # interleaved
        hard.append(common.timed(lambda: ppo.train_seeds(config, hard_drift, seeds)))
        interp.append(common.timed(lambda: ppo.train_programs(config, clip, seeds)))
    steps = config.env_steps * len(seeds)
    n = len(exprs)
    result = {
        "benchmark": "discovery", "machine": common.machine(), "versions": common.versions(("jax", "jaxlib")),
        "config": {"env": config.env_name, "env_steps": config.env_steps, "seeds": len(seeds), "candidates": n,
                   "generations": len(generations),
                   "program_length": length, "quick": args.quick, "repeats": args.repeats},
        "compile_per_candidate": {"seconds": compiled_s, "candidates_per_minute": 60 * n / compiled_s},
        "interpreter_cold": {"seconds": cold_s, "candidates_per_minute": 60 * n / cold_s},
        "interpreter_warm": {"seconds": warm_s, "candidates_per_minute": 60 * n / warm_s},
        "speedup_cold": compiled_s / cold_s, "speedup_warm": compiled_s / warm_s,
        "search": {"generations": len(generations), "compile_per_candidate_s": per_generation_compiled,
                   "interpreter_s": per_generation_interp,
                   "compile_per_candidate_per_minute": 60 * n * len(generations) / search_compiled,
                   "interpreter_per_minute": 60 * n * len(generations) / search_interp,
                   "speedup": search_compiled / search_interp},
        "fitness_max_abs_difference": agree,
        "fitness": {"compile_per_candidate": np.stack(per_candidate).tolist(), "interpreter": pop.tolist()},
        "step_cost": {"hard_coded_s": common.median(hard), "interpreter_s": common.median(interp),
                      "ratio": common.median(interp) / common.median(hard),
                      "hard_coded_steps_per_s": steps / common.median(hard),
                      "interpreter_steps_per_s": steps / common.median(interp)},
    }
    rows = [
        ["compile per candidate", n, f"{compiled_s:.1f}", result["compile_per_candidate"]["candidates_per_minute"], 1.0],
        ["interpreter, cold (1 compile)", n, f"{cold_s:.1f}", result["interpreter_cold"]["candidates_per_minute"],
         result["speedup_cold"]],
        ["interpreter, warm generation", n, f"{warm_s:.1f}", result["interpreter_warm"]["candidates_per_minute"],
         result["speedup_warm"]],
        [f"compile per candidate, {len(generations)} generations", n * len(generations), f"{search_compiled:.1f}",
         result["search"]["compile_per_candidate_per_minute"], 1.0],
        [f"interpreter, {len(generations)} generations", n * len(generations), f"{search_interp:.1f}",
         result["search"]["interpreter_per_minute"], result["search"]["speedup"]],
    ]
    print(f"\n{config.env_name}, {config.env_steps} env steps x {len(seeds)} seeds per candidate, "
          f"program length {length}; fitness of the two paths differs by at most {agree:.2g}\n")
    print(common.table(["path", "candidates", "seconds", "candidates / min", "speed-up"], rows))
    sc = result["step_cost"]
    print()
    print(common.table(["drift", "seconds (warm, median)", "env steps / s", "cost"], [
        ["hard-coded PPO clip", f"{sc['hard_coded_s']:.2f}", sc["hard_coded_steps_per_s"], 1.0],
        ["PPO clip via interpreter", f"{sc['interpreter_s']:.2f}", sc["interpreter_steps_per_s"], sc["ratio"]],
    ]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
