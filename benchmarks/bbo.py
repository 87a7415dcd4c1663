"""Generations per second of the ``bbo`` template's compiled ES loop against evosax 0.3's own ask/tell loop, and of
our Evolution Transformer against evosax's ``EvoTF_ES``.

Side by side in one run, one XLA CPU device each:

1. Open_ES, SNES, Sep_CMA_ES and CMA_ES (evosax 0.3 classes, built with the options the kernel uses: Open_ES with
   ``optax.adam(0.05)`` and a constant std 0.5, SNES with ``optax.sgd(1.0)``, the others with their defaults,
   ``std_init`` 1) on BBOB sphere and Rastrigin, dimension 10, population 16. Ours: ``kernel.run_seeds``' two
   compiled programs (the per-seed instances, then ``jit(vmap(vmap(scan)))`` over all seeds at once). Peer:
   evosax's documented loop, a Python ``for`` loop over generations calling ``jax.jit(strategy.ask)``, a jitted
   fitness and ``jax.jit(strategy.tell)``, one seed after another. Both sides get the kernel's per-seed BBOB
   instance (``problems.instance``), initial mean and random keys (``k_ask, k_tell = split(fold_in(key, t))``, one
   jitted call a generation in the peer's loop), and both evaluate ``problems.fitness_fn``. Seed 0 runs the same
   trajectory on both sides (up to float rounding); the other seeds draw other samples, because an "rbg" key
   gives other random bits inside ``vmap`` than outside it, so they agree only in distribution. The final log10
   regret difference of seed 0 and the largest per-seed difference are reported.
2. The Evolution Transformer at population 256 x dimension 100 on sphere: ours (``ead.trained()``, the
   EAD-trained model, in the kernel's loop) against evosax's ``EvoTF_ES`` with its bundled checkpoint
   (``2024_03_SNES_small.pkl``) in the loop of (1). A row of SNES in our loop at the same size is a reference.

Speed is seed-generations per second (seeds x generations / run time). Compile time is measured apart: ours is
``lower().compile()`` of both programs; the peer's is a warm-up of two generations (tracing and compiling init, ask,
fitness and tell). Run times are medians of the first run after compiling and ``--repeats`` more, ours and the
peer interleaved. Beside every speed stands the final best regret (log10, floored at 1e-12, mean over seeds).
Prints markdown tables and writes ``benchmarks/results/bbo.json``.

    .venv/bin/python benchmarks/bbo.py            # the comparison
    .venv/bin/python benchmarks/bbo.py --quick    # tiny sizes
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
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.templates.bbo import ead as distillation
from jaxlib_kernels.templates.bbo import kernel, problems

OURS = "ours (bbo kernel, one compiled call)"
PEER = "evosax loop (jit ask/tell, one seed at a time)"
TF_OURS = "ours: evotf.trained() in the bbo kernel"  # the label of the published tables (now ead.trained())
TF_PEER = "evosax EvoTF_ES (2024_03_SNES_small.pkl), evosax loop"
TF_REFERENCE = "reference: evosax SNES in the bbo kernel"
STRATEGIES = ("Open_ES", "SNES", "Sep_CMA_ES", "CMA_ES")
TARGET = 10.0  # the target: our Evolution Transformer at least 10x evosax's EvoTF_ES
VERSIONS = ("jax", "jaxlib", "evosax", "optax", "flax", "numpy")


def evosax_strategy(name: str, population: int, dim: int, init_std: float):
    """The evosax strategy and params the kernel's ``evosax_strategy`` builds for ``EvosaxSpec(name)``."""
    import evosax.algorithms as ea
    import optax

    solution = jnp.zeros(dim)
    if name == "Open_ES":
        strategy = ea.Open_ES(population, solution, optimizer=optax.adam(0.05),
                              std_schedule=optax.constant_schedule(0.5))
    elif name == "SNES":
        strategy = ea.SNES(population, solution, optimizer=optax.sgd(1.0))
    else:
        strategy = getattr(ea, name)(population, solution)
    params = strategy.default_params
    if hasattr(params, "std_init") and name != "Open_ES":
        params = params.replace(std_init=jnp.asarray(init_std, jnp.float32))
    return strategy, params


class Ours:
    """A candidate in the kernel's loop: the setup and the ES loop as two AOT-compiled programs (run_seeds' calls)."""

    def __init__(self, candidate, config: kernel.BBOConfig, seeds):
        self.config = config
        plugin = not isinstance(candidate, kernel.EvosaxSpec)
        self.seeds = jnp.asarray(np.asarray(seeds, dtype=np.int32))
        self.fns = jnp.arange(len(config.functions), dtype=jnp.int32)
        start = time.perf_counter()
        setup_fn = kernel._setup(config, plugin)
        self.setup = setup_fn.lower(self.seeds, self.fns).compile()
        shapes = jax.eval_shape(setup_fn, self.seeds, self.fns)
        self.loop = kernel.compiled(candidate, config).lower(shapes, self.fns).compile()
        self.compile_s = time.perf_counter() - start

    def __call__(self) -> np.ndarray:
        """Final best regret per seed (first function)."""
        out = jax.block_until_ready(self.loop(self.setup(self.seeds, self.fns), self.fns))
        return np.asarray(out["best"])[:, 0, -1]


class Peer:
    """evosax's documented ask/tell loop, one seed at a time, on the kernel's instances, initial means and keys."""

    def __init__(self, strategy, params, config: kernel.BBOConfig, seeds):
        self.params, self.generations = params, config.generations
        setup = kernel._setup(config, False)(jnp.asarray(np.asarray(seeds, np.int32)), jnp.zeros(1, jnp.int32))
        self.per_seed = [jax.tree.map(lambda x, s=s: x[s, 0], setup) for s in range(len(seeds))]
        self.keys_of = [jax.random.wrap_key_data(s["key"], impl=kernel.PRNG) for s in self.per_seed]
        f = problems.fitness_fn(config.functions, config.dim)
        self.init = jax.jit(strategy.init)
        self.ask = jax.jit(strategy.ask)
        self.tell = jax.jit(strategy.tell)

        def fitness(population, inst):  # the kernel's: the regret, non-finite values counted as +inf
            value = f(population, 0, inst)
            return jnp.where(jnp.isfinite(value), value, jnp.inf)

        self.fitness = jax.jit(fitness)
        self.split = jax.jit(lambda key, t: tuple(jax.random.split(jax.random.fold_in(key, t))))
        start = time.perf_counter()
        jax.block_until_ready(self.run_one(0, 2))  # traces and compiles init, split, ask, fitness and tell
        self.compile_s = time.perf_counter() - start

    def run_one(self, s: int, generations: int):
        setup, key, params = self.per_seed[s], self.keys_of[s], self.params
        state = self.init(key, setup["mean0"], params)
        for t in range(generations):
            k_ask, k_tell = self.split(key, t)
            population, state = self.ask(k_ask, state, params)
            fitness = self.fitness(population, setup["inst"])
            state, _metrics = self.tell(k_tell, population, fitness, state, params)
        return state.best_fitness

    def __call__(self) -> np.ndarray:
        finals = [self.run_one(s, self.generations) for s in range(len(self.per_seed))]
        return np.asarray(jax.block_until_ready(finals))


def measure(peers: dict, repeats: int) -> dict:
    """Label -> row: the first run after compiling and ``repeats`` more, the peers interleaved."""
    rows, runners = {}, {}
    for label, make in peers.items():
        try:
            runners[label] = make()
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            rows[label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    for r in range(repeats + 1):
        for label, run in runners.items():
            if "error" in rows.get(label, {}):
                continue
            try:
                start = time.perf_counter()
                best = run()
                elapsed = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001
                rows[label] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            row = rows.setdefault(label, {"compile_s": run.compile_s, "times_s": []})
            row["times_s"].append(elapsed)
            if r == 0:
                logs = kernel.log_regret(best)
                row["final_log10_regret_mean"] = float(logs.mean())
                row["final_log10_regret_per_seed"] = logs.tolist()
    return rows


def finish(row: dict, seeds: int, config: kernel.BBOConfig) -> dict:
    out = {"seeds": seeds, "generations": config.generations, "population": config.population, "dim": config.dim,
           **row}
    if "error" not in row:
        out["median_s"] = common.median(row["times_s"])
        out["generations_per_s"] = seeds * config.generations / out["median_s"]
    return out


def strategies_bench(functions, dim: int, population: int, generations: int, seeds: int, repeats: int):
    rows, summary = [], {}
    seed_list = list(range(seeds))
    for function in functions:
        config = kernel.BBOConfig((function,), dim, population, generations)
        for name in STRATEGIES:
            print(f"{function} / {name}: compiling and running ...", flush=True)
            peers = {OURS: lambda n=name, c=config: Ours(kernel.EvosaxSpec(n), c, seed_list),
                     PEER: lambda n=name, c=config: Peer(*evosax_strategy(n, population, dim, c.init_std), c,
                                                         seed_list)}
            here = {label: finish(row, seeds, config) for label, row in measure(peers, repeats).items()}
            for label, row in here.items():
                rows.append({"function": function, "strategy": name, "peer": label, **row})
            ours, peer = here[OURS], here[PEER]
            ok = "error" not in ours and "error" not in peer
            summary[f"{function}/{name}"] = {
                "ours_over_peer": ours["generations_per_s"] / peer["generations_per_s"] if ok else None,
                "regret_ours": ours.get("final_log10_regret_mean"), "regret_peer": peer.get("final_log10_regret_mean"),
                "seed0_abs_diff_log10_regret": abs(ours["final_log10_regret_per_seed"][0]
                                                   - peer["final_log10_regret_per_seed"][0]) if ok else None,
                "max_abs_diff_log10_regret": float(np.max(np.abs(np.subtract(
                    ours["final_log10_regret_per_seed"], peer["final_log10_regret_per_seed"])))) if ok else None}
    return rows, summary


def evotf_bench(dim: int, population: int, generations: int, seeds: int, repeats: int, ead: distillation.EADConfig):
    config = kernel.BBOConfig(("sphere",), dim, population, generations)
    seed_list = list(range(seeds))
    start = time.perf_counter()
    model = distillation.trained(ead)  # trained once (EAD), then loaded from .cache/bbo/
    model_s = time.perf_counter() - start

    def peer():
        import evosax.algorithms as ea

        strategy = ea.EvoTF_ES(population, jnp.zeros(dim))  # the bundled checkpoint 2024_03_SNES_small.pkl
        params = strategy.default_params.replace(std_init=jnp.asarray(config.init_std, jnp.float32))
        return Peer(strategy, params, config, seed_list)

    print(f"Evolution Transformer, population {population} x dimension {dim}: compiling and running ...", flush=True)
    peers = {TF_OURS: lambda: Ours(model, config, seed_list), TF_PEER: peer,
             TF_REFERENCE: lambda: Ours(kernel.EvosaxSpec("SNES"), config, seed_list)}
    rows = [{"peer": label, **finish(row, seeds, config)} for label, row in measure(peers, repeats).items()]
    by = {r["peer"]: r for r in rows}
    ours, theirs = by[TF_OURS], by[TF_PEER]
    ok = "error" not in ours and "error" not in theirs
    ratio = ours["generations_per_s"] / theirs["generations_per_s"] if ok else None
    summary = {"ours_over_evosax_evotf": ratio, "target": TARGET, "meets_speed_target": None if ratio is None
               else bool(ratio >= TARGET), "regret_ours": ours.get("final_log10_regret_mean"),
               "regret_evosax_evotf": theirs.get("final_log10_regret_mean"),
               "regret_reference_snes": by[TF_REFERENCE].get("final_log10_regret_mean"),
               "regret_gap_orders": abs(ours["final_log10_regret_mean"] - theirs["final_log10_regret_mean"])
               if ok else None}
    return {"function": "sphere", "dim": dim, "population": population, "generations": generations, "seeds": seeds,
            "repeats": repeats, "model": {"name": model.name, "load_or_train_s": model_s,
                                          "ead_config": {k: getattr(ead, k) for k in ead.__dataclass_fields__}},
            "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", nargs="+", default=["sphere", "rastrigin"])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first (which is timed too)")
    parser.add_argument("--tf-dim", type=int, default=100)
    parser.add_argument("--tf-population", type=int, default=256)
    parser.add_argument("--tf-generations", type=int, default=50)
    parser.add_argument("--tf-seeds", type=int, default=2)
    parser.add_argument("--tf-repeats", type=int, default=1, help="Evolution Transformer runs after the first")
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--out", default=str(common.RESULTS / "bbo.json"))
    args = parser.parse_args(argv)
    ead = distillation.EADConfig()
    if args.quick:
        args.functions, args.generations, args.seeds, args.repeats = ["sphere"], 10, 2, 0
        args.tf_dim, args.tf_population, args.tf_generations, args.tf_seeds, args.tf_repeats = 10, 32, 3, 1, 0
        ead = distillation.EADConfig(functions=("sphere",), generations=10, teachers=("SNES",), seeds=1, steps=5)

    rows, summary = strategies_bench(args.functions, args.dim, args.population, args.generations, args.seeds,
                                     args.repeats)
    tf = evotf_bench(args.tf_dim, args.tf_population, args.tf_generations, args.tf_seeds, args.tf_repeats, ead)
    result = {"benchmark": "bbo", "quick": args.quick, "functions": args.functions, "dim": args.dim,
              "population": args.population, "generations": args.generations, "seeds": args.seeds,
              "repeats": args.repeats, "strategies": list(STRATEGIES), "devices": [str(d) for d in jax.local_devices()],
              "rows": rows, "summary": summary, "evotf": tf, "machine": common.machine(),
              "versions": common.versions(VERSIONS), "peak_rss_mib": common.peak_rss_bytes() / 2**20}

    def regret(r):
        return r.get("final_log10_regret_mean")

    print(f"\n## bbo: evosax strategies, dimension {args.dim}, population {args.population}, {args.generations} "
          f"generations, {args.seeds} seeds; seed-generations/s (median of {args.repeats + 1}), "
          f"{result['machine'].get('device')}\n")
    print(common.table(["function", "strategy", "peer", "compile (s)", "median run (s)", "generations/s",
                        "final log10 regret"],
                       [[r["function"], r["strategy"], r["peer"], r.get("compile_s"), r.get("median_s"),
                         r.get("generations_per_s"), regret(r) if "error" not in r else r["error"]] for r in rows]))
    print("\n" + common.table(["function / strategy", "ours / peer", "log10 regret ours", "log10 regret peer",
                               "difference, seed 0 (same samples)", "largest per-seed difference"],
                              [[k, v["ours_over_peer"], v["regret_ours"], v["regret_peer"],
                                v["seed0_abs_diff_log10_regret"], v["max_abs_diff_log10_regret"]]
                               for k, v in summary.items()]))
    print(f"\n## bbo: Evolution Transformer, sphere, population {tf['population']} x dimension {tf['dim']}, "
          f"{tf['generations']} generations, {tf['seeds']} seeds (median of {tf['repeats'] + 1}); our model "
          f"{tf['model']['name']} loaded or trained in {tf['model']['load_or_train_s']:.1f} s\n")
    print(common.table(["peer", "compile (s)", "median run (s)", "generations/s", "final log10 regret"],
                       [[r["peer"], r.get("compile_s"), r.get("median_s"), r.get("generations_per_s"),
                         regret(r) if "error" not in r else r["error"]] for r in tf["rows"]]))
    s = tf["summary"]
    print("\n" + common.table(["ours / EvoTF_ES", "target", "met", "log10 regret ours", "log10 regret EvoTF_ES",
                               "log10 regret SNES (reference)"],
                              [[s["ours_over_evosax_evotf"], s["target"], s["meets_speed_target"], s["regret_ours"],
                                s["regret_evosax_evotf"], s["regret_reference_snes"]]]))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
