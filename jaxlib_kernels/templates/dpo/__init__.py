"""The ``dpo`` template: discovering preference-optimisation losses (DiscoPOP, Lu et al., 2024) at small scale.

DiscoPOP let an LLM write offline preference-optimisation losses as code, trained a model with each and fed the
score back; its best find, LRML ("DiscoPOP"), blends the logistic loss of DPO (Rafailov et al., 2023) with the
exponential loss. A candidate here is ``preference_loss(rho, beta) -> per-pair loss`` (source), where rho is the
policy's log-ratio margin of the chosen over the rejected completion minus the reference's; batch statistics are
allowed. Evaluation (:mod:`.kernel`): a tiny causal transformer LM, SFT on synthetic Markov-chain text, preference
pairs sampled from it and labelled Bradley-Terry by a known reward, the policy trained from the SFT model with the
candidate against the frozen reference, for every seed and every beta of the setting's sweep in one compiled call.

Metric (maximised): the KL-penalised reward, ``mean over the beta sweep of (mean reward - kl_coef * KL(policy ||
reference))`` at the end of training, kl_coef = 0.1 per nat. A loss that buys reward with unbounded KL pays for it,
as it falls behind on the paper's reward/KL frontier; the frontier itself (reward and KL per beta, 95% intervals)
is a figure of every paper. Budget: gradient steps (minibatches of 32 pairs).

Code: ``losses`` (baselines, variables), ``kernel`` (model, SFT cache, training), ``candidate`` (gate, probe),
``figures``; the offline symbolic search in z is the preference language's
(``jaxlib_kernels.search.preference``). Text: ``prompts/templates/dpo/``.

Model sizes: the training setting's LM has 9,288 parameters (one layer, width 32), the held-out ``wide`` one
38,888 (two layers, width 48). Measured on the 2 shared CPU cores of the development machine (load average 10-20,
so wall times are about 3x a quiet machine's), with ``benchmarks/dpo_frontier.py`` (``evaluate`` on the
training setting, 96 gradient steps, 8 seeds): DPO's mean reward at beta = 0.05 is 0.812 +/- 0.020 (95% t) at
KL 4.62 +/- 0.66 nats, against 0.526 for the SFT model's own samples (so DPO is far from the ceiling of 1); LRML
(DiscoPOP) reaches 0.322 +/- 0.016 at KL 1.44 +/- 0.27: a lower KL but not DPO's reward (paired difference
-0.490 +/- 0.022). Its loss increases on (-2.37, 1.44) at beta = 0.05, so from rho = 0, where every pair starts,
its gradient pushes the margin down. KL-penalised reward: DPO 0.357 +/- 0.046, LRML 0.230 +/- 0.033.
"""

from __future__ import annotations

from jaxlib_kernels.optimisers.space import Continuous
from jaxlib_kernels.search import preference
from jaxlib_kernels.templates.base import (
    PAPER_TREE,
    SMOKE_TREE,
    Arg,
    Baseline,
    Discovery,
    Metric,
    PluginSpec,
    Profile,
    ResultSchema,
    Setting,
    Template,
    TreeBudget,
)
from jaxlib_kernels.templates.dpo import candidate, figures, kernel, losses, unit
from jaxlib_kernels.templates.dpo.candidate import NOVELTY_THRESHOLD, PROBE_SCALE, check, probe
from jaxlib_kernels.templates.dpo.kernel import BETAS, DPOConfig, LMConfig, TaskConfig
from jaxlib_kernels.templates.dpo.unit import SMALL, WIDE, evaluate, kernel_config, population

OTHER_BETAS = (0.01, 0.5, 1.0, 2.0)

SETTINGS = {
    "unigram": Setting(
        "unigram", "markov8-unigram", description="token-value reward, 1-layer LM, beta in {0.025, 0.05, 0.1, 0.25}",
        options=(("lm", SMALL), ("reward", "unigram"), ("betas", BETAS)),
    ),
    "unigram_betas": Setting(
        "unigram_betas", "markov8-unigram", held_out=True,
        description="the same task at beta in {0.01, 0.5, 1, 2} (held-out beta range)",
        options=(("lm", SMALL), ("reward", "unigram"), ("betas", OTHER_BETAS)),
    ),
    "bigram": Setting(
        "bigram", "markov8-bigram", held_out=True,
        description="counting-up bigram reward (held-out reward)",
        options=(("lm", SMALL), ("reward", "bigram"), ("betas", BETAS)),
    ),
    "wide": Setting(
        "wide", "markov8-unigram", held_out=True,
        description="token-value reward, 2-layer width-48 LM (held-out model size)",
        options=(("lm", WIDE), ("reward", "unigram"), ("betas", BETAS)),
    ),
}

PROFILES = {
    "smoke": Profile(
        "smoke", num_ideas=1, seeds=2, budget=32, settings=("unigram", "unigram_betas"), baselines=("dpo",),
        search_generations=3, search_population=16,
        tree=SMOKE_TREE,
    ),
    "default": Profile(
        "default", num_ideas=2, seeds=4, budget=96, settings=("unigram", "unigram_betas", "bigram"),
        baselines=("dpo", "ipo", "slic", "lrml"), search_generations=6, search_population=32,
        tree=TreeBudget(),
    ),
    "paper": Profile(
        "paper", num_ideas=4, seeds=8, budget=160, settings=("unigram", "unigram_betas", "bigram", "wide"),
        baselines=tuple(losses.SOURCES), search_generations=10, search_population=64,
        tree=PAPER_TREE,
    ),
}

BASELINES = {
    name: Baseline(name, losses.LABELS[name], source, expression=losses.EXPRESSIONS.get(name),
                   description=losses.DESCRIPTIONS[name], latex=losses.LATEX[name])
    for name, source in losses.SOURCES.items()
}
BASELINE_LABELS = losses.LABELS

def baseline_source(name: str) -> str:
    return BASELINES[name].source


TEMPLATE = Template(
    name="dpo",
    title="Discovering preference-optimisation losses",
    plugin=PluginSpec(
        "preference_loss",
        (Arg("rho", "(B,) float32", "log-ratio margin: (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - "
             "log ref(y_l|x)) over a batch of B preference pairs"),
         Arg("beta", "() float32", "the KL-regularisation strength; z = beta * rho")),
        "per-pair loss of rho's shape (minimised; batch statistics allowed)",
    ),
    metric=Metric("kl_penalised_reward", "mean over the beta sweep of the policy samples' mean reward minus "
                  "0.1 x KL(policy || reference) in nats, at the end of training", maximize=True,
                  bounds=(None, 1.0)),  # a reward in [0, 1] minus a non-negative KL penalty
    baselines=BASELINES,
    settings=SETTINGS,
    profiles=PROFILES,
    evaluate=evaluate,
    population=population,  # a tree stage's nodes in one compiled call, lr and max_grad_norm traced
    check=check,
    probe=probe,
    propose=preference.LANGUAGE.propose,
    render=preference.LANGUAGE.render,
    kernel_config=kernel_config,
    kernel_modules=("jaxlib_kernels.templates.dpo.kernel", "jaxlib_kernels.templates.dpo.unit"),
    schema=ResultSchema("gradient steps", "KL-penalised reward", "KL-penalised reward",
                        extras=("reward", "kl", "betas", "reward_curve", "kl_curve", "loss", "ref_reward")),
    budget_unit="gradient steps",
    probe_scale=PROBE_SCALE,
    novelty_threshold=NOVELTY_THRESHOLD,
    figures=figures.dpo_figures,
    formula_lhs=r"\ell(\rho, \beta)",
    search_space=preference.LANGUAGE.search_space,
    # scientist discover: the unigram task at 32 policy steps (DPO at 0.83 of the ceiling or less on every setting,
    # benchmarks/results/dpo_settings.md), confirmed on the held-out beta range, reward and model size, against DPO
    # and DiscoPOP's LRML (its temperature tuned like any constant)
    discovery=Discovery(kernel.train_programs, setting="unigram", held_out=("unigram_betas", "bigram", "wide"),
                        budget=32, baselines=("dpo", "lrml"), language=preference.LANGUAGE, budget_field="steps"),
    # the policy's Adam step and gradient-norm clip (kl_coef is the metric's, not training's: never tuned)
    hparams=(Continuous("lr", 1e-4, 1e-2, log=True), Continuous("max_grad_norm", 0.1, 10.0, log=True)),
)

__all__ = [
    "BASELINES",
    "BASELINE_LABELS",
    "PROFILES",
    "SETTINGS",
    "SMALL",
    "TEMPLATE",
    "WIDE",
    "DPOConfig",
    "LMConfig",
    "TaskConfig",
    "baseline_source",
    "candidate",
    "check",
    "evaluate",
    "kernel",
    "kernel_config",
    "losses",
    "probe",
    "unit",
]
