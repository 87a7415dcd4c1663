"""Neuroevolution problems for the ``bbo`` template: the ES search space is the flat parameter vector of a small
MLP policy on a gymnax control environment, the objective its regret against the best possible episodic return.

A task (:data:`TASKS`) names a gymnax 1.0 environment, the policy's hidden width, the episodes per evaluation and
the episode length. Policy: ``obs -> tanh(obs W1 + b1) -> h W2 + b2``, the action the argmax of the outputs
(discrete actions) or ``high * tanh(output)`` (a continuous box); the parameter vector is ``W1, b1, W2, b2``
flattened in that order (:func:`num_params` entries), so it is an ordinary point ``x`` of the ES loop.

Objective, lower is better, like BBOB's regret: ``max(max_return - mean return over the episodes, floor)`` with
``max_return`` an upper bound of the episodic return (CartPole-v1: the episode length, reachable; Pendulum-v1: 0,
since every reward is ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2) <= 0``; the best policies stay about 10^2 above
it, so its log10 regret cannot fall much below 2) and ``floor`` = :data:`REGRET_FLOOR` (a solved CartPole gives
log10 regret -2 instead of minus infinity). The episodes' start states come from the instance's ``env_seed``
(drawn from the seed, like a BBOB instance), the same in every generation: the objective is a deterministic
function of ``x`` per seed, so best-so-far regret is a true value, not the luck of one noisy draw.

Episodes use gymnax's ``step_env`` (no auto-reset: the return is masked after the first ``done``, and no reset
state is drawn on every step) inside one ``lax.scan``; everything is vmapped over members and episodes, and the
kernel vmaps it over seeds. gymnax is imported only when a fitness is built.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

REGRET_FLOOR = 1e-2
PRNG = "rbg"  # the kernel's key implementation (kernel.PRNG)


@dataclasses.dataclass(frozen=True)
class Task:
    """One neuroevolution problem: a gymnax id and the sizes of its policy and its evaluation."""

    env_id: str
    obs_dim: int
    action_dim: int  # number of discrete actions, or the size of a continuous action
    discrete: bool
    hidden: int
    episodes: int
    max_steps: int
    max_return: float  # an upper bound of the episodic return: the regret's zero
    action_high: float = 1.0  # continuous actions: high * tanh(output)


TASKS = {
    "gymnax_cartpole": Task("CartPole-v1", 4, 2, True, hidden=8, episodes=4, max_steps=200, max_return=200.0),
    "gymnax_pendulum": Task("Pendulum-v1", 3, 1, False, hidden=16, episodes=4, max_steps=200, max_return=0.0,
                            action_high=2.0),
}


def num_params(task: Task | str) -> int:
    task = TASKS[task] if isinstance(task, str) else task
    return task.obs_dim * task.hidden + task.hidden + task.hidden * task.action_dim + task.action_dim


def policy(task: Task, theta: jax.Array, obs: jax.Array) -> jax.Array:
    """The MLP policy of the flat parameters ``theta`` (num_params,): the action for ``obs``."""
    o, h, a = task.obs_dim, task.hidden, task.action_dim
    w1 = theta[: o * h].reshape(o, h)
    b1 = theta[o * h: o * h + h]
    w2 = theta[o * h + h: o * h + h + h * a].reshape(h, a)
    b2 = theta[o * h + h + h * a:]
    out = jnp.tanh(obs @ w1 + b1) @ w2 + b2
    if task.discrete:
        return jnp.argmax(out)
    return task.action_high * jnp.tanh(out)


def make_env(task: Task):
    import gymnax

    env, params = gymnax.make(task.env_id)
    params = params.replace(max_steps_in_episode=task.max_steps)
    space = env.action_space(params)
    shape = env.observation_space(params).shape
    size = int(space.n) if task.discrete else int(space.shape[0] if space.shape else 1)
    if (int(jnp.prod(jnp.asarray(shape))), size) != (task.obs_dim, task.action_dim):
        raise ValueError(f"{task.env_id}: observation {shape} and action {size} do not match the task's "
                         f"{task.obs_dim} and {task.action_dim}")
    return env, params


def episode_return(task: Task, env, params, theta: jax.Array, key: jax.Array) -> jax.Array:
    """Undiscounted return of one episode of the policy ``theta`` from the start state of ``key``."""
    obs, state = env.reset(key, params)

    def body(carry, _):
        obs, state, alive, total = carry
        action = policy(task, theta, jnp.reshape(obs, (-1,)).astype(jnp.float32))
        obs, state, reward, done, _ = env.step_env(key, state, action, params)
        total = total + alive * jnp.asarray(reward, jnp.float32).reshape(())
        alive = alive * (1.0 - jnp.asarray(done, jnp.float32))
        return (obs, state, alive, total), None

    init = (obs, state, jnp.float32(1.0), jnp.float32(0.0))
    return jax.lax.scan(body, init, None, length=task.max_steps)[0][3]


def episode_keys(task: Task, env_seed: jax.Array) -> jax.Array:
    return jax.random.split(jax.random.key(env_seed, impl=PRNG), task.episodes)


def returns(task: Task | str, population: jax.Array, env_seed: jax.Array) -> jax.Array:
    """Mean return over the task's episodes of every member of ``population`` (P, num_params) -> (P,)."""
    task = TASKS[task] if isinstance(task, str) else task
    env, params = make_env(task)
    keys = episode_keys(task, env_seed)
    one = jax.vmap(lambda theta, k: episode_return(task, env, params, theta, k), in_axes=(None, 0))
    return jnp.mean(jax.vmap(one, in_axes=(0, None))(population, keys), axis=1)


def regret_fn(name: str, dim: int):
    """``regret(population (P, D), instance) -> (P,)``: the task's floored regret (module docstring)."""
    task = TASKS[name]
    if dim != num_params(task):
        raise ValueError(f"{name}: the policy has {num_params(task)} parameters, the setting says dim {dim}")
    env, params = make_env(task)

    def regret(population, inst):
        keys = episode_keys(task, inst["env_seed"])
        one = jax.vmap(lambda theta, k: episode_return(task, env, params, theta, k), in_axes=(None, 0))
        ret = jnp.mean(jax.vmap(one, in_axes=(0, None))(population, keys), axis=1)
        return jnp.maximum(task.max_return - ret, REGRET_FLOOR)

    return regret
