"""A purejaxrl-style single-file PPO (Lu et al., 2022, purejaxrl ``ppo.py``), the other pure-JAX peer of ppo.py.

Written after purejaxrl's ``make_train(config) -> train(rng)``: gymnax-style ``reset(key, params)`` /
``step(key, state, action, params)`` environments behind a LogWrapper, an MLP actor-critic with tanh, GAE by a
reverse scan, clipped policy and value losses, minibatch shuffling per epoch. Two deviations, both neutral for
speed: initial parameters come from outside (``make_init``; flax's orthogonal init inside ``jit(vmap)`` was seen
to hang here, ARCHITECTURE.md section 9), and the per-update metrics are reduced to episode counts and return sums in
the kernel instead of returning every step's info. navix is called through its own API (``env.step`` with its
delayed autoreset), gymnax through its own (``(obs, state, reward, terminated, truncated, info)``).
rejax 0.1.3, the packaged alternative, unpacks gymnax's old 4-value step and fails with gymnax 1.0.1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import navix as nx
import numpy as np
import optax
from flax import struct
from flax.linen.initializers import constant, orthogonal

# --- environments, gymnax-style ---------------------------------------------------------------------------------


class GymnaxEnv:
    """gymnax 1.0 with ``done = terminated | truncated`` (purejaxrl's 4-value contract)."""

    def __init__(self, name: str):
        self.env, self.params = gymnax.make(name)
        self.num_actions = int(self.env.action_space(self.params).n)
        self.obs_size = int(np.prod(self.env.observation_space(self.params).shape))

    def reset(self, key):
        obs, state = self.env.reset(key, self.params)
        return obs.reshape(-1).astype(jnp.float32), state

    def step(self, key, state, action):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.params)
        return obs.reshape(-1).astype(jnp.float32), state, reward, jnp.logical_or(terminated, truncated), info


class NavixEnv:
    """navix called directly: its own ``env.step`` (autoreset one step after the end), full-grid symbolic obs."""

    def __init__(self, name: str, max_steps: int):
        self.env = nx.make(name, max_steps=max_steps, penality_coeff=0.9, observation_fn=nx.observations.symbolic)
        self.num_actions = int(self.env.action_space.maximum) + 1
        self.obs_size = int(np.prod(self.env.observation_space.shape))

    def reset(self, key):
        timestep = self.env.reset(key)
        return timestep.observation.reshape(-1).astype(jnp.float32) / 10.0, timestep

    def step(self, key, timestep, action):
        timestep = self.env.step(timestep, action)
        obs = timestep.observation.reshape(-1).astype(jnp.float32) / 10.0
        return obs, timestep, timestep.reward.astype(jnp.float32), timestep.is_done(), {}


@struct.dataclass
class LogEnvState:
    env_state: Any
    episode_returns: jax.Array
    episode_lengths: jax.Array
    returned_episode_returns: jax.Array
    returned_episode_lengths: jax.Array


class LogWrapper:
    """purejaxrl's LogWrapper: running and last-finished episode returns."""

    def __init__(self, env):
        self.env = env

    def reset(self, key):
        obs, env_state = self.env.reset(key)
        zero = jnp.zeros((), jnp.float32)
        return obs, LogEnvState(env_state, zero, jnp.zeros((), jnp.int32), zero, jnp.zeros((), jnp.int32))

    def step(self, key, state, action):
        obs, env_state, reward, done, info = self.env.step(key, state.env_state, action)
        new_return = state.episode_returns + reward
        new_length = state.episode_lengths + 1
        state = LogEnvState(
            env_state,
            new_return * (1 - done),
            new_length * (1 - done),
            state.returned_episode_returns * (1 - done) + new_return * done,
            state.returned_episode_lengths * (1 - done) + new_length * done,
        )
        info = {"returned_episode_returns": state.returned_episode_returns, "returned_episode": done}
        return obs, state, reward, done, info


def make_env(name: str, max_steps: int | None = None):
    if name in gymnax.registered_envs:
        return GymnaxEnv(name)
    from jaxlib_kernels.envs import default_max_steps

    return NavixEnv(name, max_steps or default_max_steps(name))


# --- network and training ---------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    action_dim: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        actor = nn.tanh(nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        actor = nn.tanh(nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(actor))
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(actor)
        critic = nn.tanh(nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        critic = nn.tanh(nn.Dense(self.hidden, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(critic))
        return logits, jnp.squeeze(nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(critic), -1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    info: dict


def default_config(**overrides) -> dict:
    config = {"ENV_NAME": "CartPole-v1", "MAX_STEPS": None, "NUM_ENVS": 4, "NUM_STEPS": 128,
              "TOTAL_TIMESTEPS": 5e5, "UPDATE_EPOCHS": 4, "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95,
              "CLIP_EPS": 0.2, "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "LR": 2.5e-4,
              "ANNEAL_LR": True, "HIDDEN": 64}
    config.update(overrides)
    config["NUM_UPDATES"] = max(1, int(config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]))
    config["MINIBATCH_SIZE"] = config["NUM_ENVS"] * config["NUM_STEPS"] // config["NUM_MINIBATCHES"]
    return config


def _log_prob(logits, action):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def _entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def make_init(config: dict):
    env = make_env(config["ENV_NAME"], config["MAX_STEPS"])
    network = ActorCritic(env.num_actions, config["HIDDEN"])
    return lambda key: network.init(key, jnp.zeros((env.obs_size,), jnp.float32))


def make_train(config: dict):
    env = LogWrapper(make_env(config["ENV_NAME"], config["MAX_STEPS"]))
    network = ActorCritic(env.env.num_actions, config["HIDDEN"])

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / config["NUM_UPDATES"]
        return config["LR"] * frac

    lr = linear_schedule if config["ANNEAL_LR"] else config["LR"]
    tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]), optax.adam(lr, eps=1e-5))

    def train(rng, network_params):
        train_state = (network_params, tx.init(network_params))
        rng, _rng = jax.random.split(rng)
        obsv, env_state = jax.vmap(env.reset)(jax.random.split(_rng, config["NUM_ENVS"]))

        def _update_step(runner_state, unused):
            def _env_step(runner_state, unused):
                train_state, env_state, last_obs, rng = runner_state
                rng, _rng = jax.random.split(rng)
                logits, value = network.apply(train_state[0], last_obs)
                action = jax.random.categorical(_rng, logits)
                log_prob = _log_prob(logits, action)
                rng, _rng = jax.random.split(rng)
                rng_step = jax.random.split(_rng, config["NUM_ENVS"])
                obsv, env_state, reward, done, info = jax.vmap(env.step)(rng_step, env_state, action)
                transition = Transition(done, action, value, reward, log_prob, last_obs, info)
                return (train_state, env_state, obsv, rng), transition

            runner_state, traj_batch = jax.lax.scan(_env_step, runner_state, None, config["NUM_STEPS"])
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state[0], last_obs)

            def _calculate_gae(traj_batch, last_val):
                def _get_advantages(gae_and_next_value, transition):
                    gae, next_value = gae_and_next_value
                    done, value, reward = transition.done, transition.value, transition.reward
                    delta = reward + config["GAMMA"] * next_value * (1 - done) - value
                    gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - done) * gae
                    return (gae, value), gae

                _, advantages = jax.lax.scan(
                    _get_advantages, (jnp.zeros_like(last_val), last_val), traj_batch, reverse=True, unroll=16
                )
                return advantages, advantages + traj_batch.value

            advantages, targets = _calculate_gae(traj_batch, last_val)

            def _update_epoch(update_state, unused):
                def _update_minbatch(train_state, batch_info):
                    traj_batch, advantages, targets = batch_info

                    def _loss_fn(params, traj_batch, gae, targets):
                        logits, value = network.apply(params, traj_batch.obs)
                        log_prob = _log_prob(logits, traj_batch.action)
                        value_pred_clipped = traj_batch.value + (value - traj_batch.value).clip(
                            -config["CLIP_EPS"], config["CLIP_EPS"]
                        )
                        value_losses = jnp.square(value - targets)
                        value_losses_clipped = jnp.square(value_pred_clipped - targets)
                        value_loss = 0.5 * jnp.maximum(value_losses, value_losses_clipped).mean()
                        ratio = jnp.exp(log_prob - traj_batch.log_prob)
                        gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                        loss_actor1 = ratio * gae
                        loss_actor2 = jnp.clip(ratio, 1.0 - config["CLIP_EPS"], 1.0 + config["CLIP_EPS"]) * gae
                        loss_actor = -jnp.minimum(loss_actor1, loss_actor2).mean()
                        entropy = _entropy(logits).mean()
                        total_loss = loss_actor + config["VF_COEF"] * value_loss - config["ENT_COEF"] * entropy
                        return total_loss, (value_loss, loss_actor, entropy)

                    params, opt_state = train_state
                    grads = jax.grad(_loss_fn, has_aux=True)(params, traj_batch, advantages, targets)[0]
                    updates, opt_state = tx.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                train_state, traj_batch, advantages, targets, rng = update_state
                rng, _rng = jax.random.split(rng)
                batch_size = config["MINIBATCH_SIZE"] * config["NUM_MINIBATCHES"]
                permutation = jax.random.permutation(_rng, batch_size)
                batch = (traj_batch, advantages, targets)
                batch = jax.tree_util.tree_map(lambda x: x.reshape((batch_size,) + x.shape[2:]), batch)
                shuffled = jax.tree_util.tree_map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree_util.tree_map(
                    lambda x: jnp.reshape(x, [config["NUM_MINIBATCHES"], -1] + list(x.shape[1:])), shuffled
                )
                train_state, _ = jax.lax.scan(_update_minbatch, train_state, minibatches)
                return (train_state, traj_batch, advantages, targets, rng), None

            update_state = (train_state, traj_batch, advantages, targets, rng)
            update_state, _ = jax.lax.scan(_update_epoch, update_state, None, config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            info = traj_batch.info
            metric = {"episodes": info["returned_episode"].sum(),
                      "return_sum": (info["returned_episode_returns"] * info["returned_episode"]).sum()}
            return (train_state, env_state, last_obs, rng), metric

        rng, _rng = jax.random.split(rng)
        runner_state = (train_state, env_state, obsv, _rng)
        runner_state, metric = jax.lax.scan(_update_step, runner_state, None, config["NUM_UPDATES"])
        return {"runner_state": runner_state, "metrics": metric}

    return train
