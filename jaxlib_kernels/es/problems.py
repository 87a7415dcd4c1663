"""Meta-learning problems as JSON-able specs: the same spec builds the same fitness function and initial candidate
in the flow process and in every Ray worker (TA-LPO: Jackson et al., 2024; HaDES: Lupu et al., 2024).

``problem_spec(template, **options)`` fills the defaults; ``make_problem(spec)`` returns ``(fitness_fn, mean)``
where ``fitness_fn(key, candidate) -> return`` (maximised) and ``mean`` is the initial ES search centre.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxlib_kernels.es import meta, talpo
from jaxlib_kernels.registry import Registry

LPO_DEFAULTS = {
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

HADES_DEFAULTS = {
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

ES_DEFAULTS = {
    "lpo": {"std": 0.05, "lr": 0.02},
    "hades": {"std": 0.1, "lr": 0.05},
}

DEFAULTS: Registry[dict] = Registry("meta-learning template", {"lpo": LPO_DEFAULTS, "hades": HADES_DEFAULTS})


def problem_spec(template: str, **options: Any) -> dict:
    """The full spec of ``template`` with ``options`` over its defaults; unknown option names are refused."""
    defaults = DEFAULTS[template]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {template} option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **{k: v for k, v in options.items() if v is not None}, "template": template}


def es_spec(template: str, strategy: str = "Open_ES", population: int = 16, **options: Any) -> dict:
    """An :class:`meta.ESConfig` as a dict (the strategy name resolved), with the template's std / lr defaults."""
    spec = {"strategy": meta.resolve_strategy(strategy), "population_size": int(population),
            **ES_DEFAULTS[template], **{k: v for k, v in options.items() if v is not None}}
    meta.make_strategy(es_config(spec), jax.numpy.zeros(2))  # validates (names, sizes, antithetic parity)
    return spec


def es_config(spec: dict) -> meta.ESConfig:
    return meta.ESConfig(**spec)


def lpo_ppo_config(spec: dict):
    """The inner PPO configuration of a TA-LPO spec: exactly the lpo template's, so the learned drift is evaluated
    (``lpo.evaluate``) in the configuration it was meta-trained in."""
    from jaxlib_kernels.templates import lpo

    return lpo.ppo_config(lpo.SETTINGS[spec["setting"]], spec["total_timesteps"])


def drift_net(spec: dict) -> talpo.DriftNetConfig:
    return talpo.DriftNetConfig(hidden=spec["hidden"], layers=spec["layers"], temporal=spec["temporal"],
                                init_scale=spec["init_scale"])


def hades_config(spec: dict):
    from jaxlib_kernels.templates import hades

    return hades.HadesConfig(env_name=spec["env"], max_steps=spec["max_steps"], num_pairs=spec["num_pairs"],
                             width=spec["width"], depth=spec["depth"], inner_steps=spec["inner_steps"],
                             inner_lr=spec["inner_lr"], eval_episodes=spec["eval_episodes"],
                             init_seed=spec["seed"])


def make_problem(spec: dict) -> tuple[Callable[[jax.Array, Any], jax.Array], Any]:
    """``(fitness_fn, initial mean)`` of a spec made by :func:`problem_spec`."""
    if spec["template"] == "lpo":
        net = drift_net(spec)
        mean = talpo.init_drift_params(jax.random.key(spec["seed"]), net)
        return talpo.make_fitness(lpo_ppo_config(spec), net, spec["num_inits"], spec["seed"]), mean
    if spec["template"] == "hades":
        from jaxlib_kernels.templates import hades

        config = hades_config(spec)
        mean = hades.initial_candidate(jax.random.key(spec["seed"]), config, spec["method"])
        return hades.make_fitness(config, spec["method"]), mean
    raise ValueError(DEFAULTS.unknown_message(spec["template"]))
