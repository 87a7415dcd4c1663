"""The ``marl`` template's kernel glue: a setting and budget -> the IPPO / MAPPO configuration, and one unit.

The gate's checks and the behaviour probe of a drift are the ``lpo`` template's (the plug-in is the same), so a
drift of the ``lpo`` archive is a valid ``marl`` candidate as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxlib_kernels import ppo
from jaxlib_kernels.population import template_population
from jaxlib_kernels.templates.base import Setting, with_hparams
from jaxlib_kernels.templates.lpo.kernel import check_plugin, probe
from jaxlib_kernels.templates.marl import ippo

# per-setting options that reach the kernel configuration (everything else keeps MARLConfig's defaults)
CONFIG_OPTIONS = ("critic", "env_kwargs", "num_envs", "num_steps", "lr", "reward_shaping")


def marl_config(setting: Setting, budget: int) -> ippo.MARLConfig:
    """The IPPO (``critic="local"``) or MAPPO (``critic="world"``) configuration of a setting at a unit's budget."""
    options = {k: setting.option(k) for k in CONFIG_OPTIONS if setting.option(k) is not None}
    return ippo.MARLConfig(env_name=setting.env, total_timesteps=int(budget), **options)


def train_programs(config: ippo.MARLConfig, programs, seeds: list[int]) -> np.ndarray:
    """The final mean per-agent return (C, S) of interpreted drift ``programs`` on ``seeds``: one compiled
    population call (the discovery engine's fitness)."""
    return ippo.mean_over_last(ippo.train_programs(config, programs, seeds))


def evaluate(setting: Setting, budget: int, drift: Callable, seeds: list[int], hparams: dict | None = None) -> dict:
    """Train multi-agent PPO with ``drift`` on every seed in one compiled call; the template's unit result.

    ``curve``: per-update mean per-agent return of the episodes started in the update, each counted to its end
    (NaN where none started; ``ppo.Tally``); ``final``: the mean over
    the last tenth of training; extras ``win_rate`` (SMAX wins per episode over the last tenth, NaN elsewhere),
    ``episodes`` and ``drift`` (per update).
    """
    config = with_hparams(marl_config(setting, budget), hparams)
    metrics = ippo.train_seeds(config, drift, seeds)
    episodes = np.asarray(metrics["episodes"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(episodes > 0, np.asarray(metrics["return_sum"], dtype=np.float64) / episodes, np.nan)
    win_rate = ippo.mean_over_last(metrics, "wins") if config.smax else np.full(len(seeds), np.nan)
    return {
        "x": (np.arange(config.num_updates) + 1) * config.num_envs * config.num_steps,
        "curve": curve,
        "final": ippo.mean_over_last(metrics),
        "win_rate": win_rate,
        "episodes": metrics["episodes"],
        "drift": metrics["drift"],
    }


# Template.population: the final mean per-agent return (N, S) of every (drift text, hyperparameters) pair, the
# drifts that are expression trees trained in one compiled call with their lr, ent_coef and update_epochs traced
population = template_population(
    marl_config, evaluate, lambda config, programs, values, seeds: ippo.mean_over_last(
        ippo.train_population(config, programs, values, seeds)), ppo.TRACED)

__all__ = ["CONFIG_OPTIONS", "check_plugin", "evaluate", "marl_config", "population", "probe", "train_programs"]
