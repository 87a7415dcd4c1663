"""The ``hades`` template: behaviour distillation by evolution strategies (Lupu et al., 2024, HaDES).

HaDES learns a tiny synthetic dataset of state-action pairs such that a freshly initialised policy, behaviour-
cloned on it, acts well in the environment; the dataset is meta-trained by OpenES (Salimans et al., 2017) on that
return. A candidate of this template is a *parametric* configuration of that meta-training (JSON: method
``hades_r`` / ``hades_f`` / ``direct``, dataset size, ES step and perturbation scale, cloning steps and rate,
initial scales; see :mod:`.candidate`). The budget is ES generations at a fixed population (a setting option),
so every arm gets the same number of fitness evaluations. The baseline is direct-parameter OpenES on the policy
weights (``direct``); the paper's HaDES-R and HaDES-F configurations are further baselines. Held out: other
policy widths at the final evaluation (the dataset transfers, the direct policy is searched at that width) and
Acrobot-v1.

Code: ``kernel`` (environments, policy, behaviour cloning, fitness, the ES loop), ``candidate`` (keys, gate,
probe), ``unit`` (one experiment unit), ``search`` (the offline ideation). Text: ``prompts/templates/hades/``.

Budgets, measured with ``unit.evaluate`` on 2 shared CPU cores (population 32, 4 seeds, mean final return):
CartPole-v1 at 15 generations: direct 411 (seeds 500, 185, 500, 458), HaDES-R default 209, HaDES-R with 16 pairs
209; at 20: HaDES-R with ``es_lr`` 0.2 and ``es_std`` 0.3 456; at 40: direct 500 on every seed (the ceiling), so
the default profile uses 15 and the paper profile 20. Width-16 policies at 15 generations: 306 (that HaDES-R), 172
(default HaDES-R), 178 (direct); width 256: 361, 109, 368; Acrobot-v1: -89, -204, -89. A unit costs one compile of
the generation step (about 5-10 s on CPU) plus 40-90 ms per generation; ``scientist run --template hades --profile
smoke`` took 54 s inside the run (36 s of experiments), ``--profile default`` 99 s (71 s of experiments).
"""

from __future__ import annotations

from jaxlib_kernels.templates.base import (
    PAPER_TREE,
    SMOKE_TREE,
    Arg,
    Baseline,
    Metric,
    PluginSpec,
    Profile,
    ResultSchema,
    Setting,
    Template,
    TreeBudget,
    candidate_json,
)
from jaxlib_kernels.templates.hades import candidate, kernel, search, unit
from jaxlib_kernels.templates.hades.candidate import (
    DEFAULTS,
    KEYS,
    NOVELTY_THRESHOLD,
    PROBE_SCALE,
    SPEC,
    check,
    normalise,
    probe,
    resolve,
)
from jaxlib_kernels.templates.hades.kernel import (
    DEFAULT_ES,
    METHODS,
    HadesConfig,
    behaviour_clone,
    check_dataset,
    episode_return,
    evaluate_dataset,
    init_dataset,
    init_policy,
    initial_candidate,
    make_direct_fitness,
    make_env,
    make_fitness,
    make_hades_fitness,
    mean_return,
    policy_logits,
    train,
    transfer_returns,
)
from jaxlib_kernels.templates.hades.meta import META
from jaxlib_kernels.templates.hades.unit import OPTIONS, UnitConfig, evaluate, kernel_config

SETTINGS = {
    "cartpole": Setting(
        "cartpole", "CartPole-v1", description="CartPole-v1 (gymnax), policy width 64, return up to 500",
        options=(("population", 32), ("width", 64)),
    ),
    "cartpole_w16": Setting(
        "cartpole_w16", "CartPole-v1", held_out=True,
        description="CartPole-v1, width-16 policies at the final evaluation (held-out width)",
        options=(("population", 32), ("width", 16)),
    ),
    "cartpole_w256": Setting(
        "cartpole_w256", "CartPole-v1", held_out=True,
        description="CartPole-v1, width-256 policies at the final evaluation (held-out width)",
        options=(("population", 32), ("width", 256)),
    ),
    "acrobot": Setting(
        "acrobot", "Acrobot-v1", held_out=True,
        description="Acrobot-v1 (gymnax), return -500 to about -60 (held-out environment)",
        options=(("population", 32), ("width", 64)),
    ),
}

PROFILES = {
    "smoke": Profile(
        "smoke", num_ideas=1, seeds=2, budget=8, settings=("cartpole", "cartpole_w16"), baselines=("direct",),
        search_generations=3, search_population=16,
        tree=SMOKE_TREE,
    ),
    "default": Profile(
        "default", num_ideas=2, seeds=4, budget=15, settings=("cartpole", "cartpole_w16", "acrobot"),
        baselines=("direct", "hades_r"), search_generations=6, search_population=32,
        tree=TreeBudget(),
    ),
    "paper": Profile(
        "paper", num_ideas=4, seeds=8, budget=20, settings=("cartpole", "cartpole_w16", "cartpole_w256", "acrobot"),
        baselines=("direct", "hades_r", "hades_f"), search_generations=10, search_population=64,
        tree=PAPER_TREE,
    ),
}

_HADES_DEFAULT = {"num_pairs": DEFAULTS["num_pairs"], "es_lr": DEFAULTS["es_lr"], "es_std": DEFAULTS["es_std"],
                  "inner_steps": DEFAULTS["inner_steps"], "inner_lr": DEFAULTS["inner_lr"],
                  "obs_init_std": DEFAULTS["obs_init_std"], "logit_init_std": DEFAULTS["logit_init_std"]}
BASELINES = {
    "direct": Baseline(
        "direct", "Direct OpenES", candidate_json({"method": "direct", "es_lr": DEFAULTS["es_lr"],
                                                   "es_std": DEFAULTS["es_std"]}),
        description="OpenES on the policy weights themselves, the same population, step and perturbation scale",
    ),
    "hades_r": Baseline(
        "hades_r", "HaDES-R", candidate_json({"method": "hades_r", **_HADES_DEFAULT}),
        description="4 synthetic pairs, a fresh policy initialisation per fitness evaluation",
    ),
    "hades_f": Baseline(
        "hades_f", "HaDES-F", candidate_json({"method": "hades_f", **_HADES_DEFAULT}),
        description="4 synthetic pairs, one fixed policy initialisation during the search",
    ),
}
BASELINE_LABELS = {k: b.label for k, b in BASELINES.items()}
SEARCH_SPACE = {
    "kind": "parametric",
    "methods": list(METHODS),
    "keys": {k: {"type": t.__name__, "low": lo, "high": hi, "methods": list(m), "default": DEFAULTS[k],
                 "description": candidate.DESCRIPTIONS[k]} for k, (t, lo, hi, m) in SPEC.items()},
    "mutation_factors": {k: list(v) for k, v in search.FACTORS.items()},
}


def baseline_source(name: str) -> str:
    return BASELINES[name].source


TEMPLATE = Template(
    name="hades",
    title="Behaviour distillation: ES meta-training of synthetic datasets that teach a policy",
    plugin=PluginSpec(
        "config",
        tuple(Arg("method", "str", candidate.DESCRIPTIONS["method"]) if k == "method" else
              Arg(k, f"{SPEC[k][0].__name__} in [{SPEC[k][1]:g}, {SPEC[k][2]:g}]", candidate.DESCRIPTIONS[k])
              for k in KEYS),
        "{method, num_pairs, es_lr, es_std, inner_steps, inner_lr, obs_init_std, logit_init_std} (JSON object)",
        kind="parametric",
    ),
    metric=Metric(
        "final_return",
        "mean return of 16 freshly initialised policies behaviour-cloned on the found dataset "
        "(direct: of the found policy)",
        maximize=True,
        bounds=(-500.0, 500.0),  # CartPole-v1 returns in [0, 500], Acrobot-v1 in [-500, 0]
    ),
    baselines=BASELINES,
    settings=SETTINGS,
    profiles=PROFILES,
    evaluate=evaluate,
    check=check,
    check_imports=("gymnax",),  # its check builds CartPole-v1's env (3 s of import, not the candidate's time)
    probe=probe,
    propose=search.propose,
    render=search.render,
    kernel_config=kernel_config,
    kernel_modules=("jaxlib_kernels.templates.hades.kernel", "jaxlib_kernels.templates.hades.candidate",
                    "jaxlib_kernels.templates.hades.unit", "jaxlib_kernels.es.meta", "jaxlib_kernels.envs"),
    schema=ResultSchema("ES generations", "population mean return", "final return", extras=("return_max",)),
    budget_unit="ES generations",
    probe_scale=PROBE_SCALE,
    novelty_threshold=NOVELTY_THRESHOLD,
    formula_lhs=r"\mathrm{config}",
    search_space=SEARCH_SPACE,
    meta=META,  # scientist meta: HaDES datasets per size and the direct baseline (hades/meta.py)
    # no hyperparameters beyond the candidate: its ES step and scale, dataset size and cloning steps and rate are the
    # candidate's own fields (the research tree tunes them as the candidate's constants); the ES population is the
    # setting's, which fixes every arm's number of fitness evaluations
    hparams=(),
)

__all__ = [
    "BASELINES", "BASELINE_LABELS", "DEFAULTS", "DEFAULT_ES", "KEYS", "METHODS", "OPTIONS", "PROFILES",
    "SETTINGS", "TEMPLATE", "HadesConfig", "UnitConfig", "baseline_source", "behaviour_clone",
    "candidate", "check", "check_dataset", "episode_return", "evaluate", "evaluate_dataset", "init_dataset",
    "init_policy", "initial_candidate", "kernel", "kernel_config", "make_direct_fitness", "make_env", "make_fitness",
    "make_hades_fitness", "mean_return", "normalise", "policy_logits", "probe", "resolve", "search", "train",
    "transfer_returns", "unit",
]
