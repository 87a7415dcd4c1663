"""One ``dpo`` experiment unit: a setting's kernel configuration and the evaluation of a loss on it; and a tree
stage's nodes in one compiled call (``Template.population``)."""

from __future__ import annotations

import numpy as np

from jaxlib_kernels.population import template_population
from jaxlib_kernels.templates.base import Setting, with_hparams
from jaxlib_kernels.templates.dpo import kernel
from jaxlib_kernels.templates.dpo.kernel import BETAS, DPOConfig, LMConfig, TaskConfig

SMALL = LMConfig(layers=1, d_model=32, mlp=64, heads=2)
WIDE = LMConfig(layers=2, d_model=48, mlp=96, heads=4)


def kernel_config(setting: Setting, budget: int) -> DPOConfig:
    """The kernel configuration of a setting at a unit's budget (policy gradient steps, already scaled)."""
    steps = max(1, int(budget))
    return DPOConfig(lm=setting.option("lm", SMALL), task=TaskConfig(reward=setting.option("reward", "unigram")),
                     betas=tuple(setting.option("betas", BETAS)), steps=steps, checkpoints=min(4, steps))


def evaluate(setting: Setting, budget: int, loss, seeds: list[int], hparams: dict | None = None) -> dict:
    """Train every seed and beta with ``loss``: the unit result of the template contract plus the frontier."""
    config = with_hparams(kernel_config(setting, budget), hparams)
    out = kernel.train_seeds(config, loss, seeds)
    curve = kernel.penalised(config, out["reward"], out["kl"])  # (S, T)
    return {
        "x": (np.arange(config.checkpoints) + 1) * config.steps_per_checkpoint,
        "curve": curve,
        "final": curve[:, -1],
        "reward": out["reward"][..., -1],  # (S, betas)
        "kl": out["kl"][..., -1],
        "betas": np.asarray(config.betas),
        "reward_curve": out["reward"],
        "kl_curve": out["kl"],
        "loss": out["loss"],
        "ref_reward": out["ref_reward"],
    }


# Template.population: the final metric (N, S) of every (loss text, hyperparameters) pair; the losses that are
# preference-language trees train in one compiled call per configuration with their lr and max_grad_norm as
# per-member values, any other loss alone (``evaluate``)
population = template_population(kernel_config, evaluate, kernel.train_population, kernel.TRACED,
                                 plugin="preference_loss", language="preference", expression=kernel.expression_of)
