"""The peer of ``benchmarks/marl.py``: IPPO laid out as JaxMARL's ``baselines/IPPO/ippo_ff_mpe.py`` is.

Written for this benchmark after that script's structure (Rutherford et al., "JaxMARL"; itself after purejaxrl):
a config dict in JaxMARL's upper-case keys, ``jaxmarl.make`` + ``MPELogWrapper``, ``batchify`` / ``unbatchify``
between agent dicts and one (agents x envs) actor batch, one parameter-shared feed-forward actor-critic (two
64-unit tanh layers each), a flax ``TrainState``, GAE by a reverse ``lax.scan``, PPO's clipped objective with
per-minibatch advantage normalisation and clipped value loss, and ``jit(vmap(train))`` over seeds. Two changes,
both for measuring: the network is initialised outside ``vmap`` (``make_init``; flax's orthogonal initialiser
inside ``jit(vmap)`` was seen to hang here, and the purejaxrl peer of ``benchmarks/ppo.py`` does the same), and
the wandb callback is replaced by per-update sums of finished episodes' returns (divided by the number of agents:
``MPELogWrapper`` logs rewards times the number of agents), so the final return is read with the same rule as
ours (``benchmarks/marl.py``). The action distribution is a categorical over logits
written out (JaxMARL uses distrax's, which computes the same sample, log-probability and entropy).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal
from flax.training.train_state import TrainState


def config_of(env_name: str, total_timesteps: int, lr: float) -> dict:
    """JaxMARL's ``ippo_ff_mpe.yaml`` with the given environment, budget and learning rate."""
    return {"LR": lr, "NUM_ENVS": 16, "NUM_STEPS": 128, "TOTAL_TIMESTEPS": int(total_timesteps), "UPDATE_EPOCHS": 4,
            "NUM_MINIBATCHES": 4, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2, "ENT_COEF": 0.01,
            "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh", "ENV_NAME": env_name, "ENV_KWARGS": {},
            "ANNEAL_LR": True}


class ActorCritic(nn.Module):
    action_dim: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        act = nn.relu if self.activation == "relu" else nn.tanh
        a = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        a = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(a))
        logits = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=constant(0.0))(a)
        c = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(x))
        c = act(nn.Dense(64, kernel_init=orthogonal(np.sqrt(2)), bias_init=constant(0.0))(c))
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=constant(0.0))(c)
        return logits, jnp.squeeze(value, axis=-1)


class Transition(NamedTuple):
    done: jnp.ndarray
    action: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    log_prob: jnp.ndarray
    obs: jnp.ndarray
    info: dict


def batchify(x: dict, agent_list, num_actors):
    return jnp.stack([x[a] for a in agent_list]).reshape((num_actors, -1))


def unbatchify(x: jnp.ndarray, agent_list, num_envs, num_agents):
    x = x.reshape((num_agents, num_envs, -1))
    return {a: x[i] for i, a in enumerate(agent_list)}


def _log_prob(logits, action):
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def _entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _env(config: dict):
    import jaxmarl
    from jaxmarl.wrappers.baselines import MPELogWrapper

    return MPELogWrapper(jaxmarl.make(config["ENV_NAME"], **config["ENV_KWARGS"]))


def make_init(config: dict):
    """``init(rng) -> network params`` for one seed (called outside ``vmap``; the module docstring says why)."""
    env = _env(config)
    network = ActorCritic(env.action_space(env.agents[0]).n, activation=config["ACTIVATION"])

    def init(rng):
        return network.init(rng, jnp.zeros(env.observation_space(env.agents[0]).shape))

    return init


def make_train(config: dict):
    env = _env(config)
    config = dict(config)
    config["NUM_ACTORS"] = env.num_agents * config["NUM_ENVS"]
    config["NUM_UPDATES"] = config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]
    config["MINIBATCH_SIZE"] = config["NUM_ACTORS"] * config["NUM_STEPS"] // config["NUM_MINIBATCHES"]

    def linear_schedule(count):
        frac = 1.0 - (count // (config["NUM_MINIBATCHES"] * config["UPDATE_EPOCHS"])) / config["NUM_UPDATES"]
        return config["LR"] * frac

    def train(rng, network_params):
        network = ActorCritic(env.action_space(env.agents[0]).n, activation=config["ACTIVATION"])
        lr = linear_schedule if config["ANNEAL_LR"] else config["LR"]
        tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]), optax.adam(learning_rate=lr, eps=1e-5))
        train_state = TrainState.create(apply_fn=network.apply, params=network_params, tx=tx)

        rng, _rng = jax.random.split(rng)
        obsv, env_state = jax.vmap(env.reset)(jax.random.split(_rng, config["NUM_ENVS"]))

        def _update_step(runner_state, unused):
            def _env_step(runner_state, unused):
                train_state, env_state, last_obs, rng = runner_state
                obs_batch = batchify(last_obs, env.agents, config["NUM_ACTORS"])
                rng, _rng = jax.random.split(rng)
                logits, value = network.apply(train_state.params, obs_batch)
                action = jax.random.categorical(_rng, logits)
                log_prob = _log_prob(logits, action)
                env_act = unbatchify(action, env.agents, config["NUM_ENVS"], env.num_agents)
                env_act = {k: v.squeeze(-1) for k, v in env_act.items()}
                rng, _rng = jax.random.split(rng)
                obsv, env_state, reward, done, info = jax.vmap(env.step)(
                    jax.random.split(_rng, config["NUM_ENVS"]), env_state, env_act)
                info = jax.tree.map(lambda x: x.reshape((config["NUM_ACTORS"],)), info)
                transition = Transition(batchify(done, env.agents, config["NUM_ACTORS"]).squeeze(), action, value,
                                        batchify(reward, env.agents, config["NUM_ACTORS"]).squeeze(), log_prob,
                                        obs_batch, info)
                return (train_state, env_state, obsv, rng), transition

            runner_state, traj_batch = jax.lax.scan(_env_step, runner_state, None, config["NUM_STEPS"])
            train_state, env_state, last_obs, rng = runner_state
            _, last_val = network.apply(train_state.params, batchify(last_obs, env.agents, config["NUM_ACTORS"]))

            def _get_advantages(gae_and_next_value, transition):
                gae, next_value = gae_and_next_value
                delta = transition.reward + config["GAMMA"] * next_value * (1 - transition.done) - transition.value
                gae = delta + config["GAMMA"] * config["GAE_LAMBDA"] * (1 - transition.done) * gae
                return (gae, transition.value), gae

            _, advantages = jax.lax.scan(_get_advantages, (jnp.zeros_like(last_val), last_val), traj_batch,
                                         reverse=True, unroll=8)
            targets = advantages + traj_batch.value

            def _update_epoch(update_state, unused):
                def _update_minbatch(train_state, batch_info):
                    traj_batch, advantages, targets = batch_info

                    def _loss_fn(params, traj_batch, gae, targets):
                        logits, value = network.apply(params, traj_batch.obs)
                        log_prob = _log_prob(logits, traj_batch.action)
                        value_pred_clipped = traj_batch.value + (value - traj_batch.value).clip(
                            -config["CLIP_EPS"], config["CLIP_EPS"])
                        value_loss = 0.5 * jnp.maximum(jnp.square(value - targets),
                                                       jnp.square(value_pred_clipped - targets)).mean()
                        ratio = jnp.exp(log_prob - traj_batch.log_prob)
                        gae = (gae - gae.mean()) / (gae.std() + 1e-8)
                        loss_actor = -jnp.minimum(ratio * gae, jnp.clip(ratio, 1.0 - config["CLIP_EPS"],
                                                                        1.0 + config["CLIP_EPS"]) * gae).mean()
                        entropy = _entropy(logits).mean()
                        total = loss_actor + config["VF_COEF"] * value_loss - config["ENT_COEF"] * entropy
                        return total, (value_loss, loss_actor, entropy)

                    grads = jax.grad(_loss_fn, has_aux=True)(train_state.params, traj_batch, advantages, targets)[0]
                    return train_state.apply_gradients(grads=grads), None

                train_state, traj_batch, advantages, targets, rng = update_state
                rng, _rng = jax.random.split(rng)
                batch_size = config["MINIBATCH_SIZE"] * config["NUM_MINIBATCHES"]
                permutation = jax.random.permutation(_rng, batch_size)
                batch = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                                     (traj_batch, advantages, targets))
                shuffled = jax.tree.map(lambda x: jnp.take(x, permutation, axis=0), batch)
                minibatches = jax.tree.map(lambda x: jnp.reshape(x, [config["NUM_MINIBATCHES"], -1] + list(x.shape[1:])),
                                           shuffled)
                train_state, _ = jax.lax.scan(_update_minbatch, train_state, minibatches)
                return (train_state, traj_batch, advantages, targets, rng), None

            update_state, _ = jax.lax.scan(_update_epoch, (train_state, traj_batch, advantages, targets, rng), None,
                                           config["UPDATE_EPOCHS"])
            train_state, rng = update_state[0], update_state[-1]
            finished = traj_batch.info["returned_episode"]
            # MPELogWrapper logs each reward times the number of agents (the team's); per agent, as ours, is / agents
            per_agent = traj_batch.info["returned_episode_returns"] / env.num_agents
            metric = {"return_sum": jnp.sum(jnp.where(finished, per_agent, 0.0)),
                      "episodes": jnp.sum(finished).astype(jnp.float32)}
            return (train_state, env_state, last_obs, rng), metric

        rng, _rng = jax.random.split(rng)
        runner_state, metric = jax.lax.scan(_update_step, (train_state, env_state, obsv, _rng), None,
                                            config["NUM_UPDATES"])
        return {"runner_state": runner_state, "metrics": metric}

    return train
