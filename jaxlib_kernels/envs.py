"""One environment protocol for every kernel, in gymnax 1.0's shape, over navix and gymnax.

The protocol (:class:`Env`), used by PPO (``jaxlib_kernels/ppo.py``), HaDES and every later template::

    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Keys are explicit (nothing random is drawn from a key hidden in the state), ``params`` is a pytree of traced
values (``env.default_params``; ``None`` means the defaults, as in gymnax), and the episode that ``step`` ends is
reset in the same call: the returned ``obs`` and ``state`` already belong to the next episode (gymnax's
auto-reset). ``reward`` is float32, ``terminated``/``truncated`` are booleans, observations are flat float32
vectors of ``env.obs_size``; ``env.num_actions`` discrete actions; ``env.max_steps`` is the episode limit.
``info`` (:class:`StepInfo`) carries purejaxrl LogWrapper-style bookkeeping, set on the step that ends an
episode: ``returned_episode``, ``returned_episode_return``, ``returned_episode_length``. Every method is pure
and jit- and vmap-friendly.

``make(name)`` builds any id of one registry (close-match suggestions for unknown names):

- navix gridworlds (Pignatelli et al., 2024, "NAVIX: Scaling MiniGrid Environments with JAX"), ``Navix-*``,
  through :class:`NavixEnv`: navix's public ``env.step``/``env.reset`` only, MiniGrid's horizons by default
  (navix.make uses 100 for every grid; ARCHITECTURE.md section 9), MiniGrid's ``1 - 0.9 t / max_steps`` reward
  (navix ``penality_coeff=0.9``), the full-grid symbolic observation flattened and scaled by 1/10;
- discrete-action gymnax 1.0 ids (``CartPole-v1``, ``Acrobot-v1``, the MinAtar games) through
  :class:`GymnaxEnv`, over gymnax's own ``(obs, state, reward, terminated, truncated, info)`` step and its
  same-step reset.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxlib_kernels.registry import Registry


class EnvState(NamedTuple):
    """An adapter's state: the library's own state plus the running episode return and length."""

    env_state: Any
    episode_return: jax.Array
    episode_length: jax.Array


class StepInfo(NamedTuple):
    """What a step reports besides the transition: set on the step that ends an episode (LogWrapper-style)."""

    returned_episode: jax.Array
    returned_episode_return: jax.Array
    returned_episode_length: jax.Array


@runtime_checkable
class Env(Protocol):
    """The environment protocol (module docstring): gymnax 1.0's shape, flat float observations, same-step reset."""

    name: str
    max_steps: int

    @property
    def num_actions(self) -> int: ...

    @property
    def obs_size(self) -> int: ...

    @property
    def default_params(self) -> Any: ...

    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, EnvState]: ...

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: Any = None
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, StepInfo]: ...


def _bookkeeping(state: EnvState, reward: jax.Array, done: jax.Array) -> tuple[jax.Array, jax.Array, StepInfo]:
    """The running return and length after a step (zero again if it ended the episode), and the step's info."""
    ep_return = state.episode_return + reward
    ep_length = state.episode_length + 1
    info = StepInfo(done, ep_return, ep_length)
    return jnp.where(done, 0.0, ep_return), jnp.where(done, 0, ep_length), info


def _fresh(env_state: Any) -> EnvState:
    return EnvState(env_state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))


# --- navix ---------------------------------------------------------------------------------------------------------

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


class NavixParams(NamedTuple):
    """navix keeps every setting static on the environment object: no traced parameters."""


@dataclasses.dataclass(frozen=True)
class NavixEnv:
    """A navix gridworld behind :class:`Env`, through navix's public API only."""

    name: str
    max_steps: int
    penalty: float
    env: Any = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space.maximum) + 1

    @property
    def obs_size(self) -> int:
        return math.prod(int(d) for d in self.env.observation_space.shape)

    @property
    def default_params(self) -> NavixParams:
        return NavixParams()

    def observe(self, timestep) -> jax.Array:
        """Flatten navix's symbolic observation to floats of order one."""
        return timestep.observation.reshape(-1).astype(jnp.float32) / 10.0

    def reset(self, key: jax.Array, params: NavixParams | None = None) -> tuple[jax.Array, EnvState]:
        del params
        timestep = self.env.reset(key)
        return self.observe(timestep), _fresh(timestep)

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: NavixParams | None = None
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, StepInfo]:
        """One transition; when it ends the episode, the returned state and observation are already reset.

        navix's public ``env.step(timestep, action)`` resets one call late: it is
        ``lax.cond(timestep.step_type > 0, reset, transition)``. This adapter resets in the step that ends the
        episode, so the timestep it holds is never done and that cond would always take the transition branch;
        the adapter calls the transition, navix's ``Environment._step``, directly (``env.step``'s own second
        branch, which reads no ``step_type``). A cond whose predicate is batched becomes a select that computes a
        second, wasted reset per step (measured earlier on Empty-8x8 and DoorKey-8x8, batches 256 and 2048, 2-core
        CPU: 0.47-0.82x the speed of ``_step``); with an unbatched constant predicate it ran at ``_step``'s speed,
        but ``vmap`` still traced and batched the never-taken reset branch (some 2,000 equations) at every level
        of batching: PPO's trace and lowering took 5.5 s with it and 4.1 s without (Empty-5x5, 2 seeds; the
        returns are the same numbers).
        """
        del params
        nxt = self.env._step(state.env_state, action)  # env.step's transition branch, see above
        reward = nxt.reward.astype(jnp.float32)
        terminated, truncated = nxt.is_termination(), nxt.is_truncation()
        done = jnp.logical_or(terminated, truncated)
        fresh = self.env.reset(key)  # the next episode, from the step's own key
        timestep = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), fresh, nxt)
        ep_return, ep_length, info = _bookkeeping(state, reward, done)
        return self.observe(timestep), EnvState(timestep, ep_return, ep_length), reward, terminated, truncated, info


def _navix_factory(name: str):
    def build(max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> NavixEnv:
        import navix as nx

        steps = int(max_steps or default_max_steps(name))
        env = nx.make(name, max_steps=steps, penality_coeff=penalty, observation_fn=nx.observations.symbolic, **kwargs)
        return NavixEnv(name=name, max_steps=steps, penalty=penalty, env=env)

    return build


# --- gymnax --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GymnaxEnv:
    """A discrete-action gymnax 1.0 environment behind :class:`Env` (flat float obs, gymnax's same-step reset)."""

    name: str
    max_steps: int
    env: Any = dataclasses.field(repr=False, compare=False, hash=False)
    params: Any = dataclasses.field(repr=False, compare=False, hash=False)

    @property
    def num_actions(self) -> int:
        return int(self.env.action_space(self.params).n)

    @property
    def obs_size(self) -> int:
        return math.prod(int(d) for d in self.env.observation_space(self.params).shape)

    @property
    def default_params(self) -> Any:
        """gymnax's ``EnvParams`` (a flax struct), with ``max_steps_in_episode`` set to ``max_steps``."""
        return self.params

    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, EnvState]:
        obs, env_state = self.env.reset(key, self.params if params is None else params)
        return jnp.reshape(obs, (-1,)).astype(jnp.float32), _fresh(env_state)

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: Any = None
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, jax.Array, StepInfo]:
        obs, env_state, reward, terminated, truncated, _ = self.env.step(
            key, state.env_state, action, self.params if params is None else params
        )
        reward = jnp.asarray(reward).astype(jnp.float32)
        terminated, truncated = jnp.asarray(terminated, bool), jnp.asarray(truncated, bool)
        ep_return, ep_length, info = _bookkeeping(state, reward, jnp.logical_or(terminated, truncated))
        obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        return obs, EnvState(env_state, ep_return, ep_length), reward, terminated, truncated, info


def _gymnax_factory(name: str):
    def build(max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> GymnaxEnv:
        import gymnax
        from gymnax.environments import spaces

        del penalty  # a navix setting; gymnax rewards are the environment's own
        env, params = gymnax.make(name, **kwargs)
        if not isinstance(env.action_space(params), spaces.Discrete):
            raise ValueError(f"{name} has a continuous action space; the kernels here need discrete actions")  # noqa: TRY004
        if max_steps is not None:
            params = params.replace(max_steps_in_episode=int(max_steps))
        return GymnaxEnv(name=name, max_steps=int(params.max_steps_in_episode), env=env, params=params)

    return build


# --- the registry --------------------------------------------------------------------------------------------------

# navix and gymnax are imported when first needed, not with this module: importing them costs seconds each
# (navix loads its sprites and agents, gymnax its plotting stack), paid otherwise by every process that only needs
# a template's metadata (the flow's driver, the gate's children). A navix id (``Navix-...``) imports navix only,
# a gymnax id gymnax only.


@functools.cache
def _navix() -> Registry:
    import navix as nx

    return Registry("environment", {name: _navix_factory(name) for name in nx.registry()})


@functools.cache
def _gymnax() -> Registry:
    import gymnax

    return Registry("environment", {name: _gymnax_factory(name) for name in gymnax.registered_envs})


@functools.cache
def _registry() -> tuple[tuple[str, ...], tuple[str, ...], Registry]:
    navix, gymnax = _navix(), _gymnax()
    navix_ids, gymnax_ids = tuple(navix), tuple(gymnax)
    envs = Registry("environment", {name: navix[name] for name in navix_ids}
                    | {name: gymnax[name] for name in gymnax_ids})
    return navix_ids, gymnax_ids, envs


def __getattr__(name: str) -> Any:
    """``NAVIX_IDS``, ``GYMNAX_IDS`` and ``ENVS`` (every navix id and every gymnax id; those with continuous actions
    are refused when made), built on first use."""
    if name in ("NAVIX_IDS", "GYMNAX_IDS", "ENVS"):
        return _registry()[("NAVIX_IDS", "GYMNAX_IDS", "ENVS").index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make(name: str, max_steps: int | None = None, penalty: float = 0.9, **kwargs) -> Env:
    """The :class:`Env` of a navix id (``Navix-Empty-5x5-v0``, MiniGrid's horizon by default) or of a
    discrete-action gymnax id (``CartPole-v1``); unknown names get close-match suggestions."""
    # a navix id imports navix only, a gymnax id gymnax only; an unknown name gets suggestions from every id
    family = _navix() if name.startswith("Navix-") else _gymnax()
    if name in family:
        return family.make(name, max_steps=max_steps, penalty=penalty, **kwargs)
    return _registry()[2].make(name, max_steps=max_steps, penalty=penalty, **kwargs)
