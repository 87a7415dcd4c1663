"""The ``marl`` template: do drift functions of mirror learning transfer from one agent to many?

The plug-in is the ``lpo`` template's ``drift(ratio, advantage, progress)``, plugged unchanged into multi-agent
PPO on JaxMARL (Rutherford et al., 2024): IPPO with one network shared by all agents (de Witt et al., 2020) and,
on one held-out setting, MAPPO with a centralised critic on the world state (Yu et al., 2022). Training setting:
MPE simple_spread; held out: MPE simple_reference, simple_spread with four agents, simple_spread under MAPPO,
SMAX 3m / 2s3z against the heuristic enemy (win rate as an extra array), and Overcooked cramped_room (paper profile:
two cooks, the sparse return of 20 a soup; trained on it plus the shaped reward annealed 1 -> 0 over the first half
of training, as JaxMARL's ``ippo_ff_overcooked``, because with the sparse reward alone PPO clip barely leaves a
random policy's return at these budgets; the flattened 4x5x26 image goes into the shared MLP). Metric: the mean per-agent episodic
return over the last tenth of training, maximised. Baselines: PPO clip, no drift, the KL drift and LPO's DPO form
(the drift language's, ``jaxlib_kernels.search.drift``, as its plug-in and offline search); the gate checks,
probe and drift-shape figure are ``lpo``'s.

Code: ``ippo`` (the IPPO / MAPPO kernel), ``kernel`` (the unit glue); the transfer study is
``benchmarks/marl_transfer.py``.
Text: ``prompts/templates/marl/``.

Measured on 2 shared CPU cores (1 Dec 2026, load average 3-37, so times are upper bounds): PPO clip on simple_spread
reaches a per-agent return of -23.2 / -22.3 (2 seeds) at 200k steps against -27.7 for a random policy, and is
not at a ceiling (one seed reached -21.0 in another run); at the smoke size (8,192 steps) -25.8 on spread and -29.3
on reference. Transfer (``benchmarks/marl_transfer.py``, 65,536 steps, 4 seeds, 95% intervals, ``benchmarks/results/marl_transfer.json``):
IPPO on spread: PPO clip -23.22 +- 1.33, DPO -23.21 +- 0.51 (difference +0.005, [-1.26, +1.27], p = 0.99),
annealed clip -23.42 +- 0.56 (-0.20, [-1.46, +1.05], p = 0.68); MAPPO on spread: PPO clip -23.34 +- 0.40, DPO
-23.89 +- 0.63 (-0.55, [-1.15, +0.05], p = 0.07), annealed clip -23.18 +- 0.18 (+0.16, [-0.23, +0.54], p = 0.32):
at this scale neither single-agent drift beats PPO clip with many agents. One unit compiles in 25-40 s on an idle
core (MPE), minutes under load; SMAX 3m compiled in 3 min under load (4,096 steps: per-agent return 0.19-0.20,
win rate 0), so SMAX is in the default and paper profiles only.

PPO clip at the paper budget (393,216 joint steps), 4 seeds, against a uniformly random policy (2 Dec 2026;
``benchmarks/README.md``, marl section, has the table and the command): spread -24.2 +- 0.9 (random -27.7),
reference -33.9 +- 10.2 (random -29.7: two of four seeds fall to -42, the first tenth is at -28.4, so at this
learning rate PPO clip learns nothing there and more budget would not help), spread4 -30.5 +- 0.7 (random -32.5),
spread_mappo -22.0 +- 1.7 (random -27.7), overcooked 160 +- 28 (random 0.9, 8 soups an episode; the first tenth
6.6). None is at a ceiling (JaxMARL's converged IPPO on spread is about -18); no budget was changed.
"""

from __future__ import annotations

from jaxlib_kernels import ppo
from jaxlib_kernels.search import drift
from jaxlib_kernels.templates.base import (
    PAPER_TREE,
    SMOKE_TREE,
    Discovery,
    Metric,
    Profile,
    ResultSchema,
    Setting,
    Template,
    TreeBudget,
)
from jaxlib_kernels.templates.lpo import figures
from jaxlib_kernels.templates.marl import ippo, kernel
from jaxlib_kernels.templates.marl.kernel import check_plugin, evaluate, marl_config, probe

SETTINGS = {
    "spread": Setting("spread", "MPE_simple_spread_v3",
                      description="MPE simple_spread, 3 agents cover 3 landmarks (IPPO)"),
    "reference": Setting("reference", "MPE_simple_reference_v3", held_out=True,
                         description="MPE simple_reference, 2 agents guide each other to landmarks (held-out task)"),
    "spread4": Setting("spread4", "MPE_simple_spread_v3", held_out=True,
                       description="MPE simple_spread with 4 agents and 4 landmarks (held-out team size)",
                       options=(("env_kwargs", (("num_agents", 4), ("num_landmarks", 4))),)),
    "spread_mappo": Setting("spread_mappo", "MPE_simple_spread_v3", held_out=True,
                            description="MPE simple_spread, MAPPO with a centralised critic (held-out learner)",
                            options=(("critic", "world"),)),
    "smax_3m": Setting("smax_3m", "SMAX-3m", held_out=True,
                       description="SMAX 3m against the heuristic enemy (held-out task)"),
    "smax_2s3z": Setting("smax_2s3z", "SMAX-2s3z", held_out=True,
                         description="SMAX 2s3z against the heuristic enemy (held-out task)"),
    # sparse return (20 a soup); trained on it plus the shaped reward annealed 1 -> 0 over the first half of training,
    # as JaxMARL's ippo_ff_overcooked: with the sparse reward alone PPO clip barely leaves a random policy's return
    # at these budgets (65,536 steps, 2 seeds: 3.8 / 1.3 against 10.0 / 7.5 with the annealed shaping, random 0.9)
    "overcooked": Setting("overcooked", "overcooked", held_out=True,
                          description="Overcooked cramped_room, 2 cooks, sparse return (held-out task and reward)",
                          options=(("env_kwargs", (("layout", "cramped_room"),)), ("reward_shaping", 0.5))),
}

PROFILES = {
    "smoke": Profile(
        "smoke", num_ideas=1, seeds=2, budget=16_384, settings=("spread", "reference"),
        baselines=("ppo_clip",), search_generations=4, search_population=24,
        tree=SMOKE_TREE,
    ),
    "default": Profile(
        "default", num_ideas=2, seeds=4, budget=98_304, settings=("spread", "reference", "spread_mappo", "smax_3m"),
        baselines=("ppo_clip", "no_drift", "kl", "dpo"), search_generations=6, search_population=32,
        tree=TreeBudget(),
    ),
    "paper": Profile(
        "paper", num_ideas=4, seeds=8, budget=393_216,
        settings=("spread", "reference", "spread4", "spread_mappo", "smax_3m", "smax_2s3z", "overcooked"),
        baselines=("ppo_clip", "no_drift", "kl", "dpo"), search_generations=10, search_population=64,
        tree=PAPER_TREE,
    ),
}

BASELINES = drift.BASELINES
BASELINE_LABELS = drift.LABELS

TEMPLATE = Template(
    name="marl",
    title="Do discovered drift functions transfer to many agents? Mirror learning for multi-agent PPO",
    **drift.contract(ratio="probability ratio pi(a|s) / pi_old(a|s) of one agent's action",
                     advantage="normalised advantage of that agent"),
    metric=Metric("final_return", "mean per-agent episodic return over the last 10% of training", maximize=True),
    settings=SETTINGS,
    profiles=PROFILES,
    evaluate=evaluate,
    check=check_plugin,
    probe=probe,
    kernel_config=marl_config,
    kernel_modules=("jaxlib_kernels.templates.marl.ippo", "jaxlib_kernels.templates.marl.kernel",
                    "jaxlib_kernels.ppo", "jaxlib_kernels.devices", "jaxlib_kernels.interpreter"),
    schema=ResultSchema("environment steps", "episodic return per agent", "final return",
                        extras=("win_rate",)),
    budget_unit="environment steps",
    figures=figures.drift_shape,
    # scientist discover: MPE simple_spread at 16,384 steps (PPO clip -25.8 against a random policy's -27.7: far
    # from a ceiling); confirmed on another MPE task, another team size and the centralised critic
    discovery=Discovery(kernel.train_programs, drift.LANGUAGE, setting="spread",
                        held_out=("reference", "spread4", "spread_mappo"),
                        budget=16_384, baselines=("ppo_clip", "dpo")),
    hparams=ppo.HPARAMS,  # the learning rate, update epochs and entropy coefficient (MARLConfig's fields)
    population=kernel.population,  # a tree stage's nodes in one compiled call, their hyperparameters traced
)

__all__ = ["BASELINES", "BASELINE_LABELS", "PROFILES", "SETTINGS", "TEMPLATE", "check_plugin", "evaluate", "ippo",
           "kernel", "marl_config", "probe"]
