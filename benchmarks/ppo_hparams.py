"""A small hyperparameter search of PPO on a NAVIX grid: the mixed-space problem of ``bbo_hparams.py``, where the
sequence optimisers of :mod:`jaxlib_kernels.optimisers` are compared on it (a study, not product code).

The space (:data:`SPACE`): the learning rate (log-continuous), PPO's clip epsilon (continuous; used by the
``ppo_clip`` drift only), the update epochs per rollout (integer) and the drift (categorical: PPO's clip, the DPO
closed form of LPO, none; the ``lpo`` template's expressions). Fitness (:class:`PPOHparams`): minus the mean
return over the last tenth of training (``ppo.mean_return``), averaged over a few seeds, of the project's PPO
kernel (:mod:`jaxlib_kernels.ppo`) at the ``lpo`` template's configuration of a setting (``lpo.kernel.ppo_config``,
e.g. ``empty5``) and a small budget.

One compiled program per value of ``update_epochs`` (a static scan length) and number of seeds: the learning rate
is a traced argument (the PPO configuration is rebuilt inside the trace around it, which ``ppo._optimizer``'s
schedule reads when it is called; checked against the static-configuration ``ppo.train_seeds`` bit for bit on
empty5 when this was written, and by a test that lr 0 leaves the parameters unchanged), and the drift is an
interpreted program (:mod:`jaxlib_kernels.interpreter`), the clip epsilon one of its constants. So a search of any
length compiles at most ``epochs high - low + 1`` programs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels import devices, interpreter, ppo
from jaxlib_kernels.optimisers.space import Categorical, Continuous, Integer, Space

DRIFTS = ("ppo_clip", "dpo", "none")
# a tiny PPO (2 updates of 4 envs x 16 steps in 2 minibatches, 8 hidden units): the tests' and ``--quick``'s
TINY = {"num_envs": 4, "num_steps": 16, "hidden": 8, "num_minibatches": 2}
TINY_BUDGET = 128


def space(epochs: tuple[int, int] = (1, 4)) -> Space:
    """The search space; ``epochs``: the (low, high) of ``update_epochs`` (each value is one compiled program)."""
    return Space([Continuous("lr", 1e-4, 3e-2, log=True), Continuous("clip_eps", 0.05, 0.5),
                  Integer("update_epochs", *epochs), Categorical("drift", DRIFTS)])


SPACE = space()


def ppo_clip(eps: float) -> list:
    """PPO's clip drift with epsilon ``eps``, the ``lpo`` template's ``PPO_CLIP`` tree (which is ``eps`` 0.2)."""
    return ["relu", ["mul", ["sub", "r", ["clip", "r", 1.0 - eps, 1.0 + eps]], "A"]]


def drift_expression(name: str, clip_eps: float):
    from jaxlib_kernels.search.drift import DPO, NO_DRIFT

    return {"ppo_clip": ppo_clip(clip_eps), "dpo": DPO, "none": NO_DRIFT}[name]


@functools.cache
def program_length() -> int:
    """One program length for every drift of the space, so they share the compiled program."""
    return max(interpreter.length_of(drift_expression(d, 0.2)) for d in DRIFTS)


def drift_program(name: str, clip_eps: float) -> interpreter.Program:
    return interpreter.encode(drift_expression(name, clip_eps), program_length())


@dataclasses.dataclass(frozen=True)
class _Prebuilt(ppo.PPOConfig):
    """A PPO configuration whose environment was made outside the trace (navix cannot be made inside one), so
    that the configuration itself can be rebuilt inside the trace with a traced learning rate."""

    env: object = None

    def make_env(self):
        return self.env


@functools.lru_cache(maxsize=16)
def _compiled(config: ppo.PPOConfig, size: int):
    """``train(keys (S,), params (S, ...), ops (S, L), consts (S, L), lr (S,))`` of one (configuration, seeds)."""
    env = config.make_env()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(ppo.PPOConfig)}

    def member(key, params, ops, consts, lr):
        traced = _Prebuilt(**{**fields, "lr": lr}, env=env)
        return ppo.make_interpreted_train(traced)(key, params, interpreter.Program(ops, consts))

    return devices.population_jit(member, size)


class PPOHparams:
    """``fitness(configs) -> (P,)``: minus PPO's mean final return of each configuration over ``seeds`` at
    ``budget`` environment steps on the ``lpo`` setting ``setting``; ``overrides``: other PPO settings."""

    def __init__(self, setting: str = "empty5", budget: int = 16_384, seeds: Sequence[int] = (0, 1),
                 overrides: dict | None = None, space: Space = SPACE):
        from jaxlib_kernels.templates.lpo import SETTINGS
        from jaxlib_kernels.templates.lpo.kernel import ppo_config

        self.setting, self.seeds, self.space = setting, tuple(seeds), space
        self.base = dataclasses.replace(ppo_config(SETTINGS[setting], budget), **(overrides or {}))
        self.evaluations = 0

    def ppo_config(self, config: dict) -> ppo.PPOConfig:
        """The static part of a configuration's PPO settings (the learning rate and drift are traced)."""
        return dataclasses.replace(self.base, update_epochs=int(config["update_epochs"]))

    def train(self, config: dict, seeds: Sequence[int] | None = None) -> dict:
        """Train one configuration on ``seeds`` (default: the fitness seeds) in one call: ``state`` and host
        ``metrics`` of shape (S, ...)."""
        seeds = list(self.seeds if seeds is None else seeds)
        cfg, S = self.ppo_config(config), len(seeds)
        keys, init_keys = ppo.seed_keys(seeds)
        params = ppo.init_params(cfg, init_keys)
        program = drift_program(config["drift"], float(config["clip_eps"]))
        out = _compiled(cfg, S)(keys, params, jnp.tile(jnp.asarray(program.ops, jnp.int32), (S, 1)),
                                jnp.tile(jnp.asarray(program.consts, jnp.float32), (S, 1)),
                                jnp.full((S,), config["lr"], jnp.float32))
        self.evaluations += 1
        return jax.tree_util.tree_map(np.asarray, out)

    def returns(self, config: dict, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Mean return over the last tenth of training, per seed."""
        return ppo.mean_return(self.train(config, seeds)["metrics"])

    def __call__(self, configs: list[dict]) -> np.ndarray:
        return np.asarray([-float(self.returns(c).mean()) for c in configs])
