"""A research-tree stage's nodes per CPU-minute: one population call (``Template.evaluate_population``) against one
unit per node, the way the AI Scientist v2 runs a node (one script each).

The stage (lpo, the default profile's tree, a tune-like stage): ``--nodes`` nodes, each a drift (PPO's clip with
its own epsilon, or a schedule of it, rendered as plug-in source) with its own learning rate, update epochs and
entropy coefficient drawn from the template's ``hparams``, on the profile's training setting at the tree's budget
(``TreeBudget.fraction`` of the profile's), on the tree's search seeds (1000, 1001). ``--stage improve`` gives
every node the same hyperparameters instead (formulas differ only). Paths, side by side in one run:

* **population**: all nodes in one ``evaluate_population`` call (lpo's ``population``: one compiled program,
  the hyperparameters traced per member); cold (its compile included) and, with ``--warm``, a second stage of
  other nodes of the same size.
* **one unit per node, one process**: each node its own ``evaluate(setting, budget, plugin, seeds, hparams=...)``
  in this process after a warm-up unit (imports, environment and shared jits already paid); a node's
  hyperparameters are fields of its kernel configuration, so a node with its own values is its own compile.
* **one unit per node, a fresh process each** (v2's script per node): ``--fresh`` of the nodes (default all),
  each in a new Python process; its rate stands for the stage's.

CPU time: ``time.process_time()`` for this process (every thread), ``getrusage(RUSAGE_CHILDREN)`` for the fresh
processes. The persistent compilation cache and the exported-program cache are off, so every path pays its compiles.
Prints a markdown table, writes ``benchmarks/results/tree_stage.json``. (Not ``tree.py``: a module of that name
beside the scripts would shadow dm-tree's ``tree``, which navix imports, wherever this folder is on ``sys.path``.)

    .venv/bin/python benchmarks/tree_stage.py          # 16 nodes x 2 seeds at the default profile's tree budget
    .venv/bin/python benchmarks/tree_stage.py --quick  # 4 nodes, 2 seeds, 4,096 env steps, 2 fresh processes
"""

from __future__ import annotations

import os

os.environ.setdefault("SCIENTIST_EXPORT_CACHE", "0")  # traced programs are not kept across processes here

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common
import jax
import numpy as np

from jaxlib_kernels import symbolic
from jaxlib_kernels.optimisers.space import Space
from jaxlib_kernels.templates import make

SEEDS = [1000, 1001]  # the research tree's search seeds (TREE_SEED0 = 1000)


def drifts(n: int) -> list[str]:
    """``n`` distinct drift sources: PPO's clip at several epsilons, and annealed by progress."""
    out = []
    for i in range(n):
        eps = round(0.1 + 0.3 * ((i // 2) / max(1, (n - 1) // 2)), 4)
        clip = ["relu", ["mul", ["sub", "r", ["clip", "r", round(1 - eps, 4), round(1 + eps, 4)]], "A"]]
        out.append(symbolic.render_source(clip if i % 2 == 0 else ["mul", ["sub", 1.0, "p"], clip]))
    return out


def hyperparameters(template, n: int, seed: int, same: bool) -> list[dict]:
    """``n`` hyperparameter sets drawn uniformly from the template's space (``same``: one set for all)."""
    space, rng = Space(list(template.hparams)), np.random.default_rng(seed)
    draws = [space.decode(rng.uniform(-1, 1, space.dim)) for _ in range(1 if same else n)]
    return [dict(draws[0 if same else i]) for i in range(n)]


def cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children (user + system)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def one_node(spec: dict) -> list[float]:
    """A node's unit in this process: ``{"setting", "budget", "text", "hparams", "seeds"}`` -> final per seed."""
    template = make("lpo")
    out = template.evaluate(template.setting(spec["setting"]), spec["budget"], template.load(spec["text"]),
                            spec["seeds"], hparams=spec["hparams"] or None)
    return np.asarray(out["final"], dtype=np.float64).tolist()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="the lpo profile whose tree budget and setting are used")
    parser.add_argument("--nodes", type=int, default=16, help="nodes of the stage")
    parser.add_argument("--budget", type=int, default=None, help="env steps per node (default: the tree's budget)")
    parser.add_argument("--fresh", type=int, default=None, help="nodes run in fresh processes (default: all)")
    parser.add_argument("--stage", choices=("tune", "improve"), default="tune",
                        help="tune: every node its own hyperparameters; improve: one set for all")
    parser.add_argument("--warm", action="store_true", help="also time a second population of other nodes")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--node", help=argparse.SUPPRESS)  # a fresh process's one node (JSON)
    parser.add_argument("--out", default=str(common.RESULTS / "tree_stage.json"))
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is paid, on every path
    if args.node:
        print(json.dumps(one_node(json.loads(args.node))))
        return {}
    if args.quick:
        args.nodes, args.budget, args.fresh = 4, args.budget or 4096, 2 if args.fresh is None else args.fresh

    template = make("lpo")
    profile = template.profile(args.profile)
    setting = template.training_setting(profile)
    budget = args.budget or max(1, round(profile.tree.fraction * profile.budget_of(setting)))
    n, fresh = args.nodes, min(args.nodes, args.fresh if args.fresh is not None else args.nodes)
    texts, hparams = drifts(n), hyperparameters(template, n, 0, args.stage == "improve")

    # (a) one population call; (a') a second stage of other nodes of the same size
    c0 = cpu()
    wall = time.perf_counter()
    pop = template.evaluate_population(setting, budget, texts, hparams, SEEDS)
    pop_wall, pop_cpu = time.perf_counter() - wall, cpu()[0] - c0[0]
    warm = None
    if args.warm:
        c1 = cpu()
        wall = time.perf_counter()
        template.evaluate_population(setting, budget, drifts(n)[::-1], hyperparameters(template, n, 1,
                                                                                        args.stage == "improve"), SEEDS)
        warm = {"cpu_s": cpu()[0] - c1[0], "wall_s": time.perf_counter() - wall}

    # (b) one unit per node in this process, after a warm-up unit that no node shares a compile with
    spec = {"setting": setting.name, "budget": budget, "seeds": SEEDS}
    one_node({**spec, "text": symbolic.render_source(["mul", 0.5, ["sq", "omr"]]), "hparams": {}})
    c2 = cpu()
    wall = time.perf_counter()
    per_node = [one_node({**spec, "text": t, "hparams": h}) for t, h in zip(texts, hparams, strict=True)]
    node_wall, node_cpu = time.perf_counter() - wall, cpu()[0] - c2[0]

    # (c) one unit per node, each in a fresh process
    c3 = cpu()
    wall = time.perf_counter()
    fresh_finals = []
    for t, h in zip(texts[:fresh], hparams[:fresh], strict=True):
        proc = subprocess.run([sys.executable, __file__, "--node", json.dumps({**spec, "text": t, "hparams": h})],
                              capture_output=True, text=True, check=True, env=dict(os.environ))
        fresh_finals.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    fresh_wall, fresh_cpu = time.perf_counter() - wall, cpu()[1] - c3[1]

    def rate(nodes: int, cpu_s: float) -> float:
        return 60.0 * nodes / cpu_s if cpu_s > 0 else float("nan")

    agree = float(np.nanmax(np.abs(pop["final"] - np.asarray(per_node)))) if n else float("nan")
    paths = {
        "population": {"nodes": n, "cpu_s": pop_cpu, "wall_s": pop_wall, "nodes_per_cpu_minute": rate(n, pop_cpu)},
        "per_node_one_process": {"nodes": n, "cpu_s": node_cpu, "wall_s": node_wall,
                                 "nodes_per_cpu_minute": rate(n, node_cpu)},
        "per_node_fresh_process": {"nodes": fresh, "cpu_s": fresh_cpu, "wall_s": fresh_wall,
                                   "nodes_per_cpu_minute": rate(fresh, fresh_cpu)},
    }
    if warm is not None:
        paths["population_warm"] = {"nodes": n, **warm, "nodes_per_cpu_minute": rate(n, warm["cpu_s"])}
    for row in paths.values():
        row["speedup_of_population"] = paths["population"]["nodes_per_cpu_minute"] / row["nodes_per_cpu_minute"]
    result = {
        "benchmark": "tree", "machine": common.machine(), "versions": common.versions(("jax", "jaxlib", "optax")),
        "config": {"template": "lpo", "profile": profile.name, "setting": setting.name, "env": setting.env,
                   "budget": budget, "seeds": SEEDS, "nodes": n, "fresh_nodes": fresh, "stage": args.stage,
                   "quick": args.quick},
        "paths": paths,
        "nodes": [{"text": t, "hparams": h} for t, h in zip(texts, hparams, strict=True)],
        "final": {"population": pop["final"].tolist(), "per_node": per_node, "fresh": fresh_finals},
        "errors": pop["errors"],
        "final_max_abs_difference": agree,
    }
    labels = {"population": "population, one call (cold: compile included)",
              "population_warm": "population, a second stage (warm)",
              "per_node_one_process": "one unit per node, one process (warm-up unit first)",
              "per_node_fresh_process": "one unit per node, a fresh process each"}
    rows = [[labels[k], r["nodes"], f"{r['cpu_s']:.1f}", f"{r['wall_s']:.1f}", r["nodes_per_cpu_minute"],
             r["speedup_of_population"]] for k, r in paths.items()]
    print(f"\nlpo {profile.name} tree stage ({args.stage}): {n} nodes x {len(SEEDS)} seeds on {setting.name} "
          f"({setting.env}) at {budget} env steps; population and per-node finals differ by at most {agree:.2g}\n")
    print(common.table(["path", "nodes", "CPU s", "wall s", "nodes / CPU-min", "population's speed-up"], rows))
    print(f"\nwrote {common.write(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
