"""EAD experiment of the bbo template: train the small Evolution Transformer on SNES/OpenES teacher trajectories
(training BBOB functions, 10-D) and evaluate it in context on held-out functions and a held-out dimension against
its teachers (and evosax's shipped EvoTF_ES checkpoint with --evosax-ckpt). Prints mean final log10 regret with
95% confidence half-widths over seeds. Usage: python benchmarks/bbo_ead.py [--steps N] [--seeds S] [--self-ref]"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from jaxlib_kernels.templates.bbo import evotf, kernel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--generations", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--self-ref", action="store_true")
    ap.add_argument("--evosax-ckpt", action="store_true")
    args = ap.parse_args()
    cfg = evotf.EADConfig(steps=args.steps, generations=args.generations, seeds=3)
    t = time.time()
    params, losses = evotf.train(cfg)
    print(json.dumps({"train_s": round(time.time() - t, 1), "loss_first": losses[0], "loss_last": losses[-1]}))
    model = evotf.EvoTF(params, cfg.window, "ead")
    from jaxlib_kernels.templates.bbo import HELD_OUT_FUNCTIONS, TRAIN_FUNCTIONS

    settings = {"heldout_fns_d10": kernel.BBOConfig(HELD_OUT_FUNCTIONS, 10, 16, args.generations),
                "train_fns_d30": kernel.BBOConfig(TRAIN_FUNCTIONS, 30, 16, args.generations)}
    methods = {"evotf_ead": model, "snes": kernel.EvosaxSpec("SNES"), "open_es": kernel.parse_evosax(
        '{"evosax":"Open_ES","lr":0.05,"std":0.5}')}
    if args.evosax_ckpt:
        methods["evosax_EvoTF_ES"] = kernel.EvosaxSpec("EvoTF_ES")
    seeds = list(range(args.seeds))
    for name, bcfg in settings.items():
        finals = {}
        for m, cand in methods.items():
            t = time.time()
            finals[m] = evotf.evaluate(cand, bcfg, seeds)["final"]
            print(f"  {name} {m}: {time.time() - t:.1f} s", flush=True)
        print(json.dumps({"setting": name, **evotf.summary(finals)}), flush=True)
    if args.self_ref:
        _, curve = evotf.self_referential(dataclasses.replace(cfg, steps=max(50, args.steps // 2)), rounds=2)
        print(json.dumps({"self_referential_curve": curve}))


if __name__ == "__main__":
    main()
