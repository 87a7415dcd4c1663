"""The HaDES kernel: behaviour distillation by ES (Lupu et al., 2024, "Behaviour Distillation"; HaDES).

The ES searches a synthetic dataset of ``N`` state-action pairs (continuous states, actions as logits). Its fitness:
a freshly initialised policy MLP is trained on it by behaviour cloning (full-batch Adam, ~50 steps, soft-label
cross-entropy), then run greedily in the environment; the episode return is the fitness. HaDES-R samples the
policy's initial weights per evaluation (datasets that teach any initialisation), HaDES-F keeps one fixed
initialisation. The baseline is direct-parameter neuroevolution: the same ES on the policy weights themselves.
Environments: gymnax 1.0 ids (CartPole-v1, Acrobot-v1, the MinAtar games) and navix gridworlds, through the
environment protocol of :mod:`jaxlib_kernels.envs`. The policy width is a parameter, so a dataset found for
one width can be tested on others (transfer). Measured: on CartPole-v1 four pairs suffice (OpenES population 64,
20-40 generations). The ``hades`` template (``__init__``) configures this kernel from a JSON candidate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlib_kernels import envs
from jaxlib_kernels.es import meta
from jaxlib_kernels.registry import Registry

# --- environments: the protocol of jaxlib_kernels.envs ------------------------------------------------------------



def make_env(name: str, max_steps: int | None = None) -> envs.Env:
    """``envs.make(name, max_steps=...)``: the environment protocol of a gymnax or navix id."""
    return envs.make(name, max_steps=max_steps)


# --- policy and behaviour cloning --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HadesConfig:
    """Static settings of one HaDES problem; ``fixed_init`` selects HaDES-F (else HaDES-R)."""

    env_name: str = "CartPole-v1"
    max_steps: int | None = None
    num_pairs: int = 4
    width: int = 64
    depth: int = 2
    inner_steps: int = 50
    inner_lr: float = 0.01  # measured: 0.05 stalls on CartPole, 0.01 reaches 500 in 20-40 generations
    fixed_init: bool = False
    init_seed: int = 0  # the HaDES-F initialisation
    eval_episodes: int = 2
    greedy: bool = True
    obs_init_std: float = 0.5  # scale of the initial synthetic states
    logit_init_std: float = 1.0

    def make_env(self) -> envs.Env:
        return make_env(self.env_name, self.max_steps)


def init_policy(key: jax.Array, obs_size: int, num_actions: int, width: int = 64, depth: int = 2) -> list[dict]:
    """A tanh MLP's weights (LeCun-normal, zero biases); no orthogonal init, so it is safe inside ``vmap``."""
    sizes = [obs_size] + [width] * depth + [num_actions]
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros((n_out,))}
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])
    ]


def policy_logits(params: list[dict], obs: jax.Array) -> jax.Array:
    """Action logits of the tanh MLP."""
    h = obs
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def init_dataset(key: jax.Array, config: HadesConfig, env: envs.Env | None = None) -> dict:
    """A random synthetic dataset: ``{"obs": (N, obs_size), "logits": (N, num_actions)}``."""
    env = env or config.make_env()
    obs_key, logit_key = jax.random.split(key)
    return {
        "obs": config.obs_init_std * jax.random.normal(obs_key, (config.num_pairs, env.obs_size)),
        "logits": config.logit_init_std * jax.random.normal(logit_key, (config.num_pairs, env.num_actions)),
    }


def check_dataset(dataset: Any, num_pairs: int | None = None, env: envs.Env | None = None) -> list[str]:
    """Problems of a synthetic dataset (keys, shapes against ``num_pairs`` and ``env``, finiteness); empty = fine."""
    if not isinstance(dataset, dict) or set(dataset) != {"obs", "logits"}:
        return ["a dataset is a dict with exactly the keys 'obs' and 'logits'"]
    obs, logits = np.asarray(dataset["obs"]), np.asarray(dataset["logits"])
    if obs.ndim != 2 or logits.ndim != 2 or obs.shape[0] != logits.shape[0]:
        return [f"expected obs (N, obs_size) and logits (N, num_actions), got {obs.shape} and {logits.shape}"]
    if num_pairs is not None and obs.shape[0] != num_pairs:
        return [f"expected {num_pairs} pairs, got {obs.shape[0]}"]
    if env is not None and (obs.shape[1], logits.shape[1]) != (env.obs_size, env.num_actions):
        n = obs.shape[0]
        return [f"{env.name} needs obs ({n}, {env.obs_size}) and logits ({n}, {env.num_actions}), "
                + f"got {obs.shape} and {logits.shape}"]
    if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(logits))):
        return ["dataset has non-finite values"]
    return []


def behaviour_clone(params: list[dict], dataset: dict, steps: int = 50, lr: float = 0.01) -> list[dict]:
    """Full-batch Adam on the soft-label cross-entropy between the policy and the dataset's action logits."""
    tx = optax.adam(lr)
    targets = jax.nn.softmax(dataset["logits"])

    def loss(p):
        return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(policy_logits(p, dataset["obs"])), axis=-1))

    def update(carry, _):
        p, opt_state = carry
        grads = jax.grad(loss)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(update, (params, tx.init(params)), None, steps)
    return params


def episode_return(key: jax.Array, params: list[dict], env: envs.Env, greedy: bool = True) -> jax.Array:
    """Undiscounted return of one episode (at most ``env.max_steps`` steps) of the policy."""
    env_params = env.default_params
    reset_key, loop_key = jax.random.split(key)
    obs, state = env.reset(reset_key, env_params)

    def body(carry, step_key):
        state, obs, alive, total = carry
        act_key, env_key = jax.random.split(step_key)
        logits = policy_logits(params, obs)
        action = jnp.argmax(logits) if greedy else jax.random.categorical(act_key, logits)
        obs, state, reward, terminated, truncated, _ = env.step(env_key, state, action, env_params)
        done = jnp.logical_or(terminated, truncated)  # the step already reset; alive masks the next episode
        total = total + alive * reward
        alive = alive * (1.0 - done.astype(jnp.float32))
        return (state, obs, alive, total), None

    carry = (state, obs, jnp.float32(1.0), jnp.float32(0.0))
    (_, _, _, total), _ = jax.lax.scan(body, carry, jax.random.split(loop_key, env.max_steps))
    return total


def mean_return(key: jax.Array, params: list[dict], env: envs.Env, episodes: int, greedy: bool = True) -> jax.Array:
    """Mean return over ``episodes`` independent episodes."""
    keys = jax.random.split(key, episodes)
    return jax.vmap(episode_return, in_axes=(0, None, None, None))(keys, params, env, greedy).mean()


# --- fitness functions (candidate -> return) ----------------------------------------------------------------------


def make_hades_fitness(config: HadesConfig, width: int | None = None) -> meta.FitnessFn:
    """``fitness(key, dataset) -> return`` of a fresh policy (``width``, default the config's) cloned on it."""
    env = config.make_env()
    width = width or config.width
    fixed_key = jax.random.key(config.init_seed)

    def fitness(key: jax.Array, dataset: dict) -> jax.Array:
        init_key, eval_key = jax.random.split(key)
        init_key = fixed_key if config.fixed_init else init_key
        policy = init_policy(init_key, env.obs_size, env.num_actions, width, config.depth)
        policy = behaviour_clone(policy, dataset, config.inner_steps, config.inner_lr)
        return mean_return(eval_key, policy, env, config.eval_episodes, config.greedy)

    return fitness


def make_direct_fitness(config: HadesConfig) -> meta.FitnessFn:
    """Baseline ``fitness(key, policy_params) -> return``: the candidate is the policy's weights."""
    env = config.make_env()

    def fitness(key: jax.Array, params: list[dict]) -> jax.Array:
        return mean_return(key, params, env, config.eval_episodes, config.greedy)

    return fitness


METHODS = ("hades_r", "hades_f", "direct")
DEFAULT_ES = meta.ESConfig(population_size=64, std=0.1, lr=0.05)


def _method_config(config: HadesConfig, method: str) -> HadesConfig:
    if method not in METHODS:
        raise ValueError(Registry("method", dict.fromkeys(METHODS)).unknown_message(method))
    return dataclasses.replace(config, fixed_init=(method == "hades_f"))


def initial_candidate(key: jax.Array, config: HadesConfig, method: str = "hades_r") -> Any:
    """The ES mean at the start: a random dataset, or random policy weights for ``direct``."""
    env = config.make_env()
    if method == "direct":
        return init_policy(key, env.obs_size, env.num_actions, config.width, config.depth)
    return init_dataset(key, config, env)


def make_fitness(config: HadesConfig, method: str = "hades_r") -> meta.FitnessFn:
    """The fitness of ``method``: ``hades_r``, ``hades_f`` (datasets) or ``direct`` (policy weights)."""
    config = _method_config(config, method)
    return make_direct_fitness(config) if method == "direct" else make_hades_fitness(config)


def evaluate_dataset(
    key: jax.Array, dataset: dict, config: HadesConfig, num_inits: int = 16, width: int | None = None
) -> np.ndarray:
    """Returns of ``num_inits`` freshly initialised policies (``width``) cloned on ``dataset``; host array."""
    fitness = make_hades_fitness(dataclasses.replace(config, fixed_init=False), width)
    dataset = jax.tree_util.tree_map(jnp.asarray, dataset)
    return np.asarray(jax.jit(jax.vmap(fitness, in_axes=(0, None)))(jax.random.split(key, num_inits), dataset))


def transfer_returns(
    key: jax.Array, dataset: dict, config: HadesConfig, widths: tuple[int, ...] = (16, 32, 64, 128, 256),
    num_inits: int = 16,
) -> dict[int, float]:
    """Mean return of fresh policies of each width cloned on one dataset (dataset transfer across widths)."""
    return {w: float(evaluate_dataset(key, dataset, config, num_inits, w).mean()) for w in widths}


def train(
    key: jax.Array,
    config: HadesConfig,
    es_config: meta.ESConfig | None = None,
    generations: int = 30,
    method: str = "hades_r",
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 10,
    step: Callable | None = None,
    strategy: tuple[Any, Any] | None = None,
) -> dict:
    """ES on a dataset (HaDES-R/F) or on the policy weights (direct); host values from :func:`meta.run_meta`.

    The default search is OpenES, population 64, std 0.1, Adam 0.05 (reaches 500 on CartPole-v1 with 4 pairs).
    ``step`` and ``strategy`` (``(strategy, es_params)`` of :func:`meta.make_strategy`, the pair ``step`` was made
    for) let repeated runs reuse one compile: evosax jits ``init`` with the strategy object as a static argument.
    """
    es_config = es_config or DEFAULT_ES
    init_key, run_key = jax.random.split(key)
    mean = initial_candidate(init_key, config, method)
    fitness = make_fitness(config, method)
    strategy, es_params = strategy or meta.make_strategy(es_config, mean)
    return meta.run_meta(
        run_key, strategy, es_params, fitness, mean, generations, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, shared_eval_key=es_config.shared_eval_key, step=step,
    )
