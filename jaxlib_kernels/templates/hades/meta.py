"""What ``scientist meta --template hades`` runs (``Template.meta``): HaDES (Lupu et al., 2024), one HaDES-R dataset
per dataset size plus the direct-parameter OpenES baseline with the same ES and budget; at the end the fresh-policy
returns with 95% CIs per size, transfer to other policy widths, and plots of the datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from jaxlib_kernels.templates.base import Meta

WIDTHS = (16, 32, 64, 128, 256)  # the policy widths a learned dataset is transferred to by default
EVAL_INITS = 16  # fresh policies (direct: episodes) per evaluation

DEFAULTS = {
    "template": "hades",
    "method": "hades_r",  # hades_r | hades_f | direct
    "env": "CartPole-v1",
    "max_steps": None,
    "num_pairs": 4,
    "width": 64,
    "depth": 2,
    "inner_steps": 50,
    "inner_lr": 0.01,
    "eval_episodes": 2,
    "seed": 0,
}
ES_DEFAULTS = {"std": 0.1, "lr": 0.05}


def config(spec: dict):
    from jaxlib_kernels.templates.hades.kernel import HadesConfig

    return HadesConfig(env_name=spec["env"], max_steps=spec["max_steps"], num_pairs=spec["num_pairs"],
                       width=spec["width"], depth=spec["depth"], inner_steps=spec["inner_steps"],
                       inner_lr=spec["inner_lr"], eval_episodes=spec["eval_episodes"], init_seed=spec["seed"])


def make_problem(spec: dict):
    import jax

    from jaxlib_kernels.templates.hades import kernel

    cfg = config(spec)
    return kernel.make_fitness(cfg, spec["method"]), kernel.initial_candidate(jax.random.key(spec["seed"]), cfg,
                                                                              spec["method"])


def like(spec: dict) -> Any:
    import jax

    from jaxlib_kernels.templates.hades import kernel

    return kernel.initial_candidate(jax.random.key(0), config(spec), spec["method"])


def searches(request: dict) -> dict[str, dict]:
    """One HaDES-R search per dataset size (default: the options' ``num_pairs``), then the direct baseline."""
    from jaxlib_kernels.es import problems

    options = request.get("options") or {}
    common = {**options, "env": request.get("env") or options.get("env"), "seed": request.get("seed", 0)}
    out = {f"hades_r_{n}_pairs": problems.problem_spec("hades", **{**common, "num_pairs": n})
           for n in request.get("dataset_sizes") or [options.get("num_pairs", 4)]}
    out["direct"] = problems.problem_spec("hades", **{**common, "method": "direct"})
    return out


def evaluate(searches: dict[str, dict], request: dict, figures_dir: str) -> dict:
    """Fresh-policy returns (95% CI) of each learned dataset, its transfer across widths, the direct baseline's
    return over :data:`EVAL_INITS` episodes, and plots of the datasets."""
    import jax

    from jaxlib_kernels.stats import summarize
    from jaxlib_kernels.templates.hades import kernel

    widths = [int(w) for w in (request.get("widths") or WIDTHS)]
    sizes, transfer, datasets, direct = {}, {}, {}, None
    eval_key = jax.random.key(1_000_003)  # never used by a search
    for name, info in searches.items():
        spec, cand = info["problem"], info["candidate"]
        cfg = config(spec)
        if spec["method"] == "direct":
            fitness = kernel.make_direct_fitness(dataclasses.replace(cfg, eval_episodes=1))
            keys = jax.random.split(eval_key, EVAL_INITS)
            values = np.asarray(jax.jit(jax.vmap(fitness, in_axes=(0, None)))(keys, cand))
            direct = {"name": name, **summarize(values), "values": values.tolist()}
            continue
        values = kernel.evaluate_dataset(eval_key, cand, cfg, num_inits=EVAL_INITS)
        n = str(spec["num_pairs"])
        sizes[n] = {"name": name, **summarize(values), "values": values.tolist(),
                    "solved_fraction": float(np.mean(values >= 0.9 * cfg.make_env().max_steps))}
        transfer[n] = {str(w): float(np.mean(kernel.evaluate_dataset(eval_key, cand, cfg, EVAL_INITS, w)))
                       for w in widths}
        labels = ["x", "x_dot", "theta", "theta_dot"] if spec["env"] == "CartPole-v1" else None
        datasets[n] = plot_dataset(cand, Path(figures_dir), f"dataset_{n}_pairs", labels)
    figure = plot_summary(sizes, direct, transfer, Path(figures_dir)) if sizes else None
    return {"sizes": sizes, "transfer": transfer, "direct": direct, "figures": [figure, *datasets.values()]}


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def summary(out: dict, request: dict) -> str:
    widths = [int(w) for w in (request.get("widths") or WIDTHS)]
    lines = ["| dataset | fresh-policy return (95% CI) | solved (>= 90% of max) | " +
             " | ".join(f"width {w}" for w in widths) + " |",
             "|---|---|---:|" + "---:|" * len(widths)]
    for n, s in out["sizes"].items():
        lines.append(f"| {n} pairs | {s['mean']:.1f} {_ci(s['ci95'])} | {s['solved_fraction']:.2f} | " +
                     " | ".join(f"{out['transfer'][n][str(w)]:.1f}" for w in widths) + " |")
    if out["direct"]:
        d = out["direct"]
        lines.append(f"| direct OpenES (same budget) | {d['mean']:.1f} {_ci(d['ci95'])} | | " +
                     " | ".join("" for _ in widths) + " |")
    return "\n".join(lines)


# ---- figures ------------------------------------------------------------------------------------------------


def plot_dataset(dataset: dict, out_dir: Path, name: str, obs_labels: list[str] | None = None) -> dict:
    """A learned HaDES dataset: each pair's state (rows: pairs, columns: state dimensions) and action probabilities."""
    import jax

    from jaxlib_kernels.es import figures as figs

    plt = figs.pyplot()
    obs, logits = np.asarray(dataset["obs"]), np.asarray(dataset["logits"])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    order = np.argsort(probs[:, 0])
    n, d = obs.shape
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 0.9 * d + 0.9 * probs.shape[1], 1.2 + 0.28 * n),
                             gridspec_kw={"width_ratios": [d, max(probs.shape[1], 1)]})
    lim = float(np.abs(obs).max()) or 1.0
    im = axes[0].imshow(obs[order], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    axes[0].set_xticks(range(d), obs_labels or [f"s{i}" for i in range(d)], rotation=45, fontsize=7)
    axes[0].set_ylabel("synthetic pair")
    axes[0].set_title("states", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.05)
    axes[1].imshow(probs[order], cmap="Greys", vmin=0, vmax=1, aspect="auto")
    axes[1].set_xticks(range(probs.shape[1]), [f"a{i}" for i in range(probs.shape[1])], fontsize=7)
    axes[1].set_yticks([])
    axes[1].set_title("action probabilities", fontsize=9)
    if n <= 32:
        for i in range(n):
            for j in range(probs.shape[1]):
                axes[1].text(j, i, f"{probs[order][i, j]:.2f}", ha="center", va="center", fontsize=6,
                             color="white" if probs[order][i, j] > 0.5 else "black")
    png, pdf = figs.save(fig, Path(out_dir), name)
    return {"name": name, "png": png, "pdf": pdf, "caption": f"Learned dataset {name}: {n} state-action pairs."}


def plot_summary(sizes: dict, direct: dict | None, transfer: dict, out_dir: Path) -> dict:
    """Return against dataset size (mean and 95% CI over fresh policies) and against policy width (transfer)."""
    from jaxlib_kernels.es import figures as figs

    plt = figs.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ns = sorted(sizes, key=int)
    means = [sizes[n]["mean"] for n in ns]
    lo = [sizes[n]["mean"] - sizes[n]["ci95"][0] for n in ns]
    hi = [sizes[n]["ci95"][1] - sizes[n]["mean"] for n in ns]
    axes[0].errorbar([int(n) for n in ns], means, yerr=[lo, hi], marker="o", capsize=3, label="HaDES-R dataset")
    if direct:
        axes[0].axhline(direct["mean"], color="k", ls="--", lw=1, label="direct OpenES (same budget)")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("dataset size (state-action pairs)")
    axes[0].set_ylabel("return of fresh policies")
    axes[0].legend(fontsize=7, frameon=False)
    for n in ns:
        widths = sorted(transfer[n], key=int)
        axes[1].plot([int(w) for w in widths], [transfer[n][w] for w in widths], marker="o", label=f"{n} pairs")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("policy width (hidden units)")
    axes[1].set_ylabel("mean return")
    axes[1].legend(fontsize=7, frameon=False)
    png, pdf = figs.save(fig, Path(out_dir), "hades_sizes_widths")
    return {"name": "hades_sizes_widths", "png": png, "pdf": pdf,
            "caption": "HaDES: return against dataset size (95% CI over fresh policies), and transfer across widths."}


META = Meta(
    name="hades", title="HaDES", description="HaDES", defaults=DEFAULTS, es_defaults=ES_DEFAULTS,
    make_problem=make_problem, searches=searches, like=like, summary=summary,
    options=("env", "dataset_sizes", "widths"), evaluate=evaluate,
)
