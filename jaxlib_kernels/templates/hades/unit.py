"""One experiment unit of the ``hades`` template: ES meta-training of one candidate on one setting, per seed.

``evaluate(setting, budget, candidate, seeds)`` runs ``budget`` OpenES generations per seed with one compiled
generation step shared by the seeds (and by later calls with the same configuration: the step and the final
evaluation are cached per configuration, so a second call with the same shapes compiles nothing). It returns the
template contract's unit result: ``x`` = generations 1..T, ``curve`` (S, T) = the population's mean return per
generation, ``final`` (S,) = the mean return of :data:`FINAL_INITS` freshly initialised policies of the setting's
``width`` behaviour-cloned on the found dataset (the ES mean), with a key the search never used; for ``direct``,
the mean return of the found policy over as many episodes. Extras: ``return_max`` (S, T), the best member.

Setting options (``Setting.options``): ``population`` (ES population, default 32), ``width`` (policy width at the
final evaluation, default 64; a held-out width tests the dataset's transfer, Lupu et al., 2024), ``search_width``
(the inner policy's width during the HaDES search, default 64) and ``eval_episodes`` (episodes per fitness
evaluation, default 2). ``direct`` has nothing to transfer: it searches the weights of a ``width`` policy itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlib_kernels.es import meta
from jaxlib_kernels.templates.base import Setting, with_hparams
from jaxlib_kernels.templates.hades import candidate as cand
from jaxlib_kernels.templates.hades.kernel import (
    HadesConfig,
    initial_candidate,
    make_direct_fitness,
    make_fitness,
    make_hades_fitness,
    train,
)

FINAL_INITS = 16  # fresh policies cloned at the final evaluation (direct: 16 x eval_episodes episodes of its policy)
FINAL_SALT = 1_000_003  # the final evaluation's key: fold_in(key(seed), FINAL_SALT), never split by the search
OPTIONS = {"population": 32, "width": 64, "search_width": 64, "eval_episodes": 2}


@dataclasses.dataclass(frozen=True)
class UnitConfig:
    """What determines a unit besides the candidate: the kernel's base configuration, the ES, the sizes."""

    base: HadesConfig  # environment, search width, depth, eval episodes (candidate keys at their defaults)
    es: meta.ESConfig  # strategy, population, antithetic sampling, shaping (lr and std come from the candidate)
    generations: int
    width: int  # policy width at the final evaluation
    final_inits: int = FINAL_INITS
    final_salt: int = FINAL_SALT


def setting_options(setting: Setting) -> dict[str, int]:
    """The setting's options over :data:`OPTIONS`; unknown option names are refused."""
    given = dict(setting.options)
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(f"hades setting {setting.name!r}: unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
    return {**OPTIONS, **given}


def kernel_config(setting: Setting, budget: int) -> UnitConfig:
    """The frozen configuration of a unit on ``setting`` with ``budget`` ES generations (already scaled)."""
    opts = setting_options(setting)
    base = HadesConfig(env_name=setting.env, max_steps=setting.max_steps, width=int(opts["search_width"]),
                       eval_episodes=int(opts["eval_episodes"]))
    es = meta.ESConfig(strategy="Open_ES", population_size=int(opts["population"]))
    return UnitConfig(base=base, es=es, generations=int(budget), width=int(opts["width"]))


def unit_problem(unit: UnitConfig, candidate: dict) -> tuple[str, HadesConfig, meta.ESConfig]:
    """``(method, config, es_config)`` of a candidate in a unit (direct searches a policy of the final width)."""
    found = cand.problems(candidate)
    if found:
        raise ValueError("invalid hades candidate: " + "; ".join(found))
    method, config, es_config = cand.resolve(candidate, unit.base, unit.es)
    if method == "direct":
        config = dataclasses.replace(config, width=unit.width)
    return method, config, es_config


@functools.lru_cache(maxsize=32)
def search_step(method: str, config: HadesConfig, es_config: meta.ESConfig) -> tuple[Callable, tuple[Any, Any]]:
    """The jitted generation step of ``method`` and its ``(strategy, es_params)``; cached, so every seed and every
    later call with the same configuration reuses one compile (evosax's jitted ``init`` keys on the strategy)."""
    strategy, es_params = meta.make_strategy(es_config, initial_candidate(jax.random.key(0), config, method))
    step = meta.make_meta_step(strategy, make_fitness(config, method), es_config.shared_eval_key)
    return step, (strategy, es_params)


@functools.lru_cache(maxsize=32)
def final_eval(method: str, config: HadesConfig, width: int, inits: int) -> Callable[[jax.Array, Any], jax.Array]:
    """Jitted ``(key, found) -> returns``: ``inits`` fresh width-``width`` policies cloned on a dataset (HaDES),
    or the found policy over ``inits * eval_episodes`` episodes (direct); cached like :func:`search_step`."""
    if method == "direct":
        fitness = make_direct_fitness(dataclasses.replace(config, eval_episodes=inits * config.eval_episodes))
        return jax.jit(lambda key, policy: fitness(key, policy)[None])
    fresh = make_hades_fitness(dataclasses.replace(config, fixed_init=False), width)
    return jax.jit(lambda key, dataset: jax.vmap(fresh, in_axes=(0, None))(jax.random.split(key, inits), dataset))


def evaluate(setting: Setting, budget: int, candidate: dict, seeds: list[int], hparams: dict | None = None) -> dict:
    """ES-train ``candidate`` on ``setting`` for ``budget`` generations once per seed; the unit result (host)."""
    unit = with_hparams(kernel_config(setting, budget), hparams)
    method, config, es_config = unit_problem(unit, candidate)
    step, strategy = search_step(method, config, es_config)
    final_fn = final_eval(method, config, unit.width, unit.final_inits)
    curves, maxima, finals = [], [], []
    for seed in seeds:
        key = jax.random.key(int(seed))
        out = train(key, config, es_config, unit.generations, method, step=step, strategy=strategy)
        curves.append(out["metrics"]["return_mean"])
        maxima.append(out["metrics"]["return_max"])
        finals.append(float(np.mean(final_fn(jax.random.fold_in(key, unit.final_salt), out["mean"]))))
    return {
        "x": np.arange(1, unit.generations + 1),
        "curve": np.asarray(curves, dtype=np.float64).reshape(len(seeds), unit.generations),
        "final": np.asarray(finals, dtype=np.float64),
        "return_max": np.asarray(maxima, dtype=np.float64).reshape(len(seeds), unit.generations),
    }
