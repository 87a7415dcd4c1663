"""Gridworld environments through navix (Pignatelli et al., 2024, "NAVIX: Scaling MiniGrid Environments with JAX").

One adapter for every navix id: ``make(name)`` returns a :class:`GridEnv` whose ``reset``/``step`` are pure,
jit- and vmap-friendly, reset in the same step an episode ends (navix itself resets one call later, which
wastes a step; ARCHITECTURE.md section 9), flatten the observation for an MLP policy, and track episode returns
like purejaxrl's LogWrapper. Rewards use MiniGrid's ``1 - 0.9 t / max_steps`` (navix ``penality_coeff=0.9``).

gymnax 1.0 ids with discrete actions (``CartPole-v1``, the MinAtar games) go through :class:`GymnaxEnv`, the same
interface over gymnax's ``(obs, state, reward, terminated, truncated, info)`` step and its own same-step reset;
``make(name)`` picks the adapter by the id.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import navix as nx
from gymnax.environments import spaces

from jaxlib_kernels.registry import Registry

# MiniGrid's own horizons; navix.make uses 100 for every grid, which changes what learns (ARCHITECTURE.md section 9).
_MINIGRID_MAX_STEPS = {
    "Empty": lambda s: 4 * s * s,
    "Empty-Random": lambda s: 4 * s * s,
    "DoorKey": lambda s: 10 * s * s,
    "DoorKey-Random": lambda s: 10 * s * s,
}


def default_max_steps(name: str) -> int:
    """MiniGrid's episode limit for a navix id, or 100 where MiniGrid has no size-based rule."""
    core = name.removeprefix("Navix-").removesuffix("-v0")
    family, _, size = core.rpartition("-")
    if "x" in size and family in _MINIGRID_MAX_STEPS:
        return _MINIGRID_MAX_STEPS[family](int(size.split("x")[0]))
    return 100


class EnvState(NamedTuple):
    """Adapter state: navix's timestep plus the running episode return and length."""

    timestep: Any
    episode_return: jax.Array
    episode_length: jax.Array


class StepInfo(NamedTuple):
    """What a step reports besides the observation: set on the step that ends an episode."""

    returned_episode: jax.Array
    returned_episode_return: jax.Array
    returned_episode_length: jax.Array


@dataclasses.dataclass(frozen=True)
class GridEnv:
    """A navix gridworld with flat float observations and same-step reset."""

    name: str
    max_steps: int
    penalty: float
    env: Any = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space.maximum) + 1

    @property
    def obs_size(self) -> int:
        shape = self.env.observation_space.shape
        size = 1
        for d in shape:
            size *= int(d)
        return size

    def observe(self, timestep) -> jax.Array:
        """Flatten navix's symbolic observation to floats of order one."""
        return timestep.observation.reshape(-1).astype(jnp.float32) / 10.0

    def reset(self, key: jax.Array) -> tuple[EnvState, jax.Array]:
        timestep = self.env.reset(key)
        state = EnvState(timestep, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        return state, self.observe(timestep)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, jax.Array, jax.Array, jax.Array, StepInfo]:
        """One transition; when it ends the episode, the returned state and observation are already reset."""
        nxt = self.env._step(state.timestep, action)  # navix's step without its delayed autoreset
        reward = nxt.reward.astype(jnp.float32)
        done = nxt.is_done()
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + 1
        fresh = self.env.reset(nxt.state.key)  # navix resets from the state's key, as its own autoreset does
        timestep = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh, nxt)
        new_state = EnvState(
            timestep,
            jnp.where(done, 0.0, ep_return),
            jnp.where(done, 0, ep_length),
        )
        info = StepInfo(done, ep_return, ep_length)
        return new_state, self.observe(timestep), reward, done, info


class GymnaxState(NamedTuple):
    """gymnax's environment state and the key its next step (and reset) draws from."""

    state: Any
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class GymnaxEnv:
    """A discrete-action gymnax environment behind :class:`GridEnv`'s interface (flat float obs, same-step reset)."""

    name: str
    max_steps: int
    env: Any = dataclasses.field(repr=False, compare=False, hash=False)
    params: Any = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space(self.params).n)

    @property
    def obs_size(self) -> int:
        size = 1
        for d in self.env.observation_space(self.params).shape:
            size *= int(d)
        return size

    def reset(self, key: jax.Array) -> tuple[EnvState, jax.Array]:
        key, reset_key = jax.random.split(key)
        obs, state = self.env.reset(reset_key, self.params)
        state = EnvState(GymnaxState(state, key), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        return state, jnp.reshape(obs, (-1,)).astype(jnp.float32)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, jax.Array, jax.Array, jax.Array, StepInfo]:
        key, step_key = jax.random.split(state.timestep.key)
        obs, env_state, reward, terminated, truncated, _ = self.env.step(
            step_key, state.timestep.state, action, self.params
        )
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + 1
        new_state = EnvState(
            GymnaxState(env_state, key), jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length)
        )
        return new_state, jnp.reshape(obs, (-1,)).astype(jnp.float32), reward, done, StepInfo(done, ep_return, ep_length)


def _gymnax_factory(name: str):
    def build(max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> GymnaxEnv:
        del penalty  # a navix setting; gymnax rewards are the environment's own
        env, params = gymnax.make(name, **kwargs)
        if not isinstance(env.action_space(params), spaces.Discrete):
            raise ValueError(f"{name} has a continuous action space; the PPO here needs discrete actions")  # noqa: TRY004
        if max_steps is not None:
            params = params.replace(max_steps_in_episode=int(max_steps))
        return GymnaxEnv(name=name, max_steps=int(params.max_steps_in_episode), env=env, params=params)

    return build


def _factory(name: str):
    def build(max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> GridEnv:
        steps = int(max_steps or default_max_steps(name))
        env = nx.make(name, max_steps=steps, penality_coeff=penalty, observation_fn=nx.observations.symbolic, **kwargs)
        return GridEnv(name=name, max_steps=steps, penalty=penalty, env=env)

    return build


ENVS: Registry = Registry("environment", {name: _factory(name) for name in nx.registry()})
GYMNAX_ENVS: Registry = Registry("environment", {name: _gymnax_factory(name) for name in gymnax.registered_envs})


def make(name: str, max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> GridEnv | GymnaxEnv:
    """Make any navix gridworld by its id (``Navix-Empty-5x5-v0``), with MiniGrid's horizon by default, or a
    discrete-action gymnax environment (``CartPole-v1``)."""
    if name in GYMNAX_ENVS:
        return GYMNAX_ENVS.make(name, max_steps=max_steps, penalty=penalty, **kwargs)
    return ENVS.make(name, max_steps=max_steps, penalty=penalty, **kwargs)
