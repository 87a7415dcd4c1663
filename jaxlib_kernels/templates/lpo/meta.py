"""What ``scientist meta --template lpo`` runs (``Template.meta``): TA-LPO (Jackson et al., 2024), the drift MLP
meta-trained by ES on one navix grid, its search mean rendered as plug-in source with the weights as literal
constants (it passes the lpo gate like any candidate), then the AI-Scientist's per-idea stages on it: PPO clip vs
the learned drift on the training grid, held-out grids and shorter / longer horizons. Also the reader of a finished
run's learned drift as behaviour on the probe grid (``scientist discover --distill``) and its figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxlib_kernels.templates.base import Meta, Profile

SEARCH = "talpo"  # the run's one search (searches/talpo)
IDEA_NAME = "talpo_learned"
SETTINGS = ("empty5", "empty_random5", "empty6", "empty5_short", "empty5_long")  # evaluated by default

DEFAULTS = {
    "template": "lpo",
    "setting": "empty5",  # the meta-training grid (an lpo template setting)
    "total_timesteps": 40_960,  # the inner PPO horizon N
    "hidden": 16,
    "layers": 1,
    "temporal": True,
    "init_scale": 0.1,
    "num_inits": 4,
    "seed": 0,
}
ES_DEFAULTS = {"std": 0.05, "lr": 0.02}


def drift_net(spec: dict):
    from jaxlib_kernels.es import talpo

    return talpo.DriftNetConfig(hidden=spec["hidden"], layers=spec["layers"], temporal=spec["temporal"],
                                init_scale=spec["init_scale"])


def ppo_config(spec: dict):
    """The inner PPO configuration of a TA-LPO spec: exactly the lpo template's, so the learned drift is evaluated
    (``lpo.evaluate``) in the configuration it was meta-trained in."""
    from jaxlib_kernels.templates import make
    from jaxlib_kernels.templates.lpo import kernel

    return kernel.ppo_config(make("lpo").setting(spec["setting"]), spec["total_timesteps"])


def make_problem(spec: dict):
    import jax

    from jaxlib_kernels.es import talpo

    net = drift_net(spec)
    mean = talpo.init_drift_params(jax.random.key(spec["seed"]), net)
    return talpo.make_fitness(ppo_config(spec), net, spec["num_inits"], spec["seed"]), mean


def like(spec: dict) -> dict:
    import jax

    from jaxlib_kernels.es import talpo

    return talpo.init_drift_params(jax.random.key(0), drift_net(spec))


def _profile(request: dict):
    from jaxlib_kernels.templates import make

    return make("lpo").profile(request.get("profile") or "smoke")


def searches(request: dict) -> dict[str, dict]:
    from jaxlib_kernels.es import problems

    steps = request.get("timesteps") or _profile(request).budget
    return {SEARCH: problems.problem_spec("lpo", total_timesteps=steps, seed=request.get("seed", 0),
                                          **(request.get("options") or {}))}


def render(candidate: Any, spec: dict) -> str:
    from jaxlib_kernels.es import talpo

    return talpo.render_source(candidate, drift_net(spec))


def idea(spec: dict, es: dict, generations: int, curve: dict) -> dict:
    net = f"{spec['layers']} tanh layer(s) of {spec['hidden']} units"
    feats = "the LPO features of (r, A) and the same features times n/N" if spec["temporal"] else "the LPO features"
    first, last = curve["return_mean"][0], curve["return_mean"][-1]
    return {
        "Name": IDEA_NAME,
        "Title": "A temporally-aware drift meta-learned by evolution strategies",
        "Hypothesis": (f"A drift network ({net}, bias-free, ReLU output, over {feats}) meta-trained by "
                       f"{es['strategy']} on {spec['setting']} at a horizon of {spec['total_timesteps']} steps matches "
                       "or beats PPO's clip on held-out grids and on shorter and longer horizons."),
        "Experiment": (f"ES meta-training: {generations} generations of {es['population_size']} candidates (population "
                       f"mean return {first:.3f} in the first generation, {last:.3f} in the last); then PPO with the "
                       "learned drift against PPO clip, same seeds, on the training grid and held-out settings."),
        "expression_latex": r"\mathrm{ReLU}\big(w_{\mathrm{out}}^{\top}\tanh(W^{\top}\phi(r, A, n/N))\big)",
        "Interestingness": 7, "Feasibility": 8, "Novelty": 6,
        "kind": "source",  # an ES-learned parametric drift, rendered as source with its weights as constants
        "origin": "es",
        "temporal": bool(spec["temporal"]),
        "novelty": {"decision": "novel", "reason": "a parametric candidate found by ES, not by the symbolic search",
                    "nearest": "ppo_clip", "distance": None, "literature": []},
    }


def profile(spec: dict, request: dict) -> Profile:
    """The evaluation's profile: the run profile's seeds (or ``seeds``), the meta-training horizon, PPO clip."""
    return Profile("meta", num_ideas=1, seeds=request.get("seeds") or _profile(request).seeds,
                   budget=spec["total_timesteps"], settings=tuple(request.get("settings") or SETTINGS),
                   baselines=("ppo_clip",))


def table(idea: dict, prof: Profile) -> list[dict]:
    """Per setting: the learned drift and PPO clip (means, 95% CIs), their difference and Welch p-value."""
    from jaxlib_kernels.templates import make

    rows = []
    for setting, info in (idea.get("final_info") or {}).items():
        comp = info.get("comparison", {})
        rows.append({"setting": setting, "env": info.get("env"), "held_out": info["held_out"],
                     "steps": prof.budget_of(make("lpo").setting(setting)),
                     "learned_mean": info["means"].get(IDEA_NAME), "learned_ci95": info["ci95"].get(IDEA_NAME),
                     "ppo_clip_mean": info["means"].get("ppo_clip"), "ppo_clip_ci95": info["ci95"].get("ppo_clip"),
                     "difference": comp.get("difference"), "difference_ci95": comp.get("ci95"),
                     "p_value": comp.get("p_value"), "significant": comp.get("significant"),
                     "n": info["n"].get(IDEA_NAME)})
    return rows


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def summary(out: dict, request: dict) -> str:
    lines = ["| setting | held out | steps | learned drift (95% CI) | PPO clip (95% CI) | difference (95% CI) | p |",
             "|---|---|---:|---|---|---|---:|"]
    for r in out.get("table") or []:
        lines.append(f"| {r['setting']} | {r['held_out']} | {r['steps']} | {r['learned_mean']:.3f} "
                     f"{_ci(r['learned_ci95'])} | {r['ppo_clip_mean']:.3f} {_ci(r['ppo_clip_ci95'])} "
                     f"| {r['difference']:+.3f} {_ci(r['difference_ci95'])} | {r['p_value']:.3g} |")
    return "\n".join(lines)


def learned_drift_behaviour(meta_run_dir: str | Path) -> dict:
    """The TA-LPO drift a ``scientist meta --template lpo`` run learned (its search mean: data, no code), evaluated on
    the lpo probe grid: ``{"target": values, "problem": spec, "generation": g, "distances": {baseline: d}}``.
    Raises ``FileNotFoundError`` / ``ValueError`` with one line when the folder holds no lpo search."""
    from jaxlib_kernels.es import meta, talpo
    from jaxlib_kernels.search import drift as search
    from jaxlib_kernels.search.drift import EXPRESSIONS

    folder = Path(meta_run_dir) / "searches" / SEARCH
    if not (folder / "search.json").exists() or not (folder / "search_mean.npz").exists():
        raise FileNotFoundError(f"{meta_run_dir}: no TA-LPO search here (searches/talpo/search.json and "
                                "search_mean.npz come from `scientist meta --template lpo`)")
    info = json.loads((folder / "search.json").read_text())
    spec = info.get("problem") or {}
    if spec.get("template") != "lpo":
        raise ValueError(f"{meta_run_dir}: the search is for template {spec.get('template')!r}, not lpo")
    net = drift_net(spec)
    theta = meta.load_candidate(folder, like(spec))
    target = search.behaviour_of(lambda r, a, p: np.asarray(talpo.drift_apply(theta, r, a, p, net)))
    distances = {name: search.distance(search.behaviour(e), target) for name, e in EXPRESSIONS.items()}
    done = sorted(folder.glob("gen_*.npz"))
    return {"target": target.tolist(), "problem": spec, "generation": int(done[-1].stem[4:]) if done else 0,
            "distances": distances, "folder": str(folder)}


def learned_source(meta_run_dir: str | Path) -> str:
    """The drift a finished lpo meta-run learned (its search mean), as plug-in source."""
    from jaxlib_kernels.es import meta, problems

    folder = Path(meta_run_dir) / "searches" / SEARCH
    if not folder.is_dir():
        raise FileNotFoundError(f"{meta_run_dir}: no TA-LPO search (searches/talpo) in this folder")
    info = folder / "search.json"
    spec = json.loads(info.read_text())["problem"] if info.exists() else problems.problem_spec("lpo")
    return render(meta.load_candidate(folder, like(spec)), spec)


# ---- figure -------------------------------------------------------------------------------------------------


def plot_learned_drift(source: str, out_dir: Path, label: str = "learned drift") -> dict:
    """The learned drift over r and A at the start, middle and end of training, beside PPO clip's."""
    import jax
    import jax.numpy as jnp

    from jaxlib_kernels import plugin
    from jaxlib_kernels.es import figures as figs
    from jaxlib_kernels.templates import make

    plt = figs.pyplot()
    learned = jax.jit(plugin.load_plugin(source, "drift"))
    clip_fn = jax.jit(plugin.load_plugin(make("lpo").baselines["ppo_clip"].source, "drift"))

    def grid(fn, a, p):  # (len(a), len(ratio)) values
        r2, a2 = np.meshgrid(ratio, a)
        out = fn(jnp.asarray(r2, jnp.float32), jnp.asarray(a2, jnp.float32), jnp.float32(p))
        return np.asarray(jnp.broadcast_to(out, r2.shape), dtype=np.float64)

    ratio = np.exp(np.linspace(np.log(0.5), np.log(2.0), 61))
    advantages = np.linspace(-2.0, 2.0, 41)
    progress = (0.0, 0.5, 1.0)
    values = np.stack([grid(learned, advantages, p) for p in progress])
    clip_values = grid(clip_fn, advantages, 0.0)
    vmax = float(max(values.max(), clip_values.max(), 1e-6))
    fig, axes = plt.subplots(1, 5, figsize=(16.5, 3.3), layout="constrained")
    extent = [ratio[0], ratio[-1], advantages[0], advantages[-1]]
    for ax, p, v in zip(axes[:3], progress, values):
        im = ax.imshow(v, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(f"{label}, n/N = {p:g}", fontsize=9)
        ax.set_xlabel("ratio r")
    axes[0].set_ylabel("advantage A")
    axes[3].imshow(clip_values, origin="lower", aspect="auto", extent=extent, vmin=0, vmax=vmax, cmap="viridis")
    axes[3].set_title("PPO clip (eps = 0.2)", fontsize=9)
    axes[3].set_xlabel("ratio r")
    fig.colorbar(im, ax=axes[:4].tolist(), fraction=0.02, pad=0.01, label="drift D")
    ax = axes[4]
    for a, style in ((1.0, "-"), (-1.0, "--")):
        for p, color in zip(progress, ("C0", "C1", "C2")):
            ax.plot(ratio, grid(learned, np.array([a]), p)[0], color=color, ls=style, label=f"A = {a:+g}, n/N = {p:g}")
        ax.plot(ratio, grid(clip_fn, np.array([a]), 0.0)[0], color="k", ls=style, lw=1, label=f"PPO clip, A = {a:+g}")
    ax.set_xscale("log")
    ax.set_xlabel("ratio r")
    ax.set_ylabel("drift D")
    ax.legend(fontsize=6, frameon=False)
    png, pdf = figs.save(fig, Path(out_dir), "learned_drift")
    return {"name": "learned_drift", "png": png, "pdf": pdf,
            "caption": f"The {label} D(r, A, n/N) over the ratio r and advantage A at the start (n/N = 0), middle and "
                       "end (n/N = 1) of training, beside PPO clip's drift; right: slices at A = +1 and A = -1."}


def figures(source: str, out_dir) -> list[dict]:
    return [plot_learned_drift(source, Path(out_dir), "learned drift")]


META = Meta(
    name="talpo", title="TA-LPO", description="TA-LPO vs PPO clip", defaults=DEFAULTS, es_defaults=ES_DEFAULTS,
    make_problem=make_problem, searches=searches, like=like, summary=summary,
    options=("profile", "seeds", "timesteps", "settings"),
    idea=idea, render=render, profile=profile, figures=figures, table=table, label="TA-LPO, learned (ours)",
    behaviour=learned_drift_behaviour,
)
