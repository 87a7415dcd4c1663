"""TA-LPO: a learned drift for mirror learning, meta-trained by ES (Jackson et al., 2024, "Discovering
Temporally-Aware Reinforcement Learning Algorithms"; LPO: Lu et al., 2022, "Discovered Policy Optimisation").

The drift ``D(r, A[, n/N])`` is a small bias-free tanh MLP over LPO features of the ratio ``r`` and advantage ``A``
that all vanish at ``r = 1`` (``r-1``, ``log r``, their squares, and each times ``A``); the temporally-aware variant
adds the same features times training progress ``n/N``. Without biases the network maps the zero feature vector to
zero, and a ReLU on the output gives ``D >= 0`` with ``D(1, A, p) = 0`` exactly. The drift parameters enter PPO
(:mod:`jaxlib_kernels.ppo`) as traced data, so one compiled ``jit(vmap(fitness))`` evaluates a whole ES population.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlib_kernels import ppo
from jaxlib_kernels.es import meta

NUM_LPO_FEATURES = 8


@dataclasses.dataclass(frozen=True)
class DriftNetConfig:
    """Shape of the drift network; ``temporal`` adds the progress-scaled features (TA-LPO)."""

    hidden: int = 32
    layers: int = 1
    temporal: bool = True
    init_scale: float = 0.1  # std of the output layer at initialisation (small: close to "no drift")

    @property
    def num_features(self) -> int:
        return NUM_LPO_FEATURES * (2 if self.temporal else 1)


def lpo_features(ratio: jax.Array, advantage: jax.Array, progress: jax.Array, temporal: bool = True) -> jax.Array:
    """LPO features of (r, A), each zero at r = 1, stacked on a new last axis; TA-LPO appends them times n/N."""
    rm1 = ratio - 1.0
    logr = jnp.log(jnp.maximum(ratio, 1e-8))
    base = [rm1, logr, rm1**2, logr**2, rm1 * advantage, logr * advantage, rm1**2 * advantage, logr**2 * advantage]
    feats = jnp.stack(jnp.broadcast_arrays(*base), axis=-1)
    if temporal:
        feats = jnp.concatenate([feats, feats * jnp.asarray(progress, feats.dtype)[..., None]], axis=-1)
    return feats


def init_drift_params(key: jax.Array, config: DriftNetConfig = DriftNetConfig()) -> dict:
    """Bias-free MLP weights: fan-in scaled hidden layers, a small output layer."""
    sizes = [config.num_features] + [config.hidden] * config.layers
    keys = jax.random.split(key, config.layers + 1)
    params = {
        f"w{i}": jax.random.normal(keys[i], (n_in, n_out)) / np.sqrt(n_in)
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
    }
    params["out"] = config.init_scale * jax.random.normal(keys[-1], (config.hidden,)) / np.sqrt(config.hidden)
    return params


def drift_apply(
    theta: dict, ratio: jax.Array, advantage: jax.Array, progress: jax.Array, config: DriftNetConfig = DriftNetConfig()
) -> jax.Array:
    """``D(r, A, n/N) = relu(MLP(features)) >= 0``, exactly 0 at r = 1; the shape of ``ratio``."""
    h = lpo_features(ratio, advantage, progress, config.temporal)
    for i in range(config.layers):
        h = jnp.tanh(h @ theta[f"w{i}"])
    return jax.nn.relu(h @ theta["out"])


def make_drift(theta: dict, config: DriftNetConfig = DriftNetConfig()) -> ppo.Drift:
    """A drift callable with ``theta`` closed over (traced or concrete)."""
    return lambda ratio, advantage, progress: drift_apply(theta, ratio, advantage, progress, config)


def flatten(theta: dict) -> tuple[jax.Array, Callable[[jax.Array], dict]]:
    """``(flat vector, unflatten)`` of drift parameters (``jax.flatten_util.ravel_pytree``)."""
    return ravel_pytree(theta)


def unflatten(flat: jax.Array, config: DriftNetConfig = DriftNetConfig()) -> dict:
    """The drift parameter pytree of a flat vector of ``config``'s size."""
    shapes = jax.eval_shape(lambda k: init_drift_params(k, config), jax.random.key(0))
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))
    return unravel(flat)


def num_params(config: DriftNetConfig = DriftNetConfig()) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(
        jax.eval_shape(lambda k: init_drift_params(k, config), jax.random.key(0))))


def make_train_with_drift_params(
    ppo_config: ppo.PPOConfig, net: DriftNetConfig = DriftNetConfig()
) -> Callable[[jax.Array, dict, dict], dict]:
    """``train(key, agent_params, theta) -> {"state", "metrics"}``: PPO whose drift weights are a traced argument.

    ``ppo.make_train`` takes a static drift callable and builds its environment when called (navix's ``make``
    cannot run under a trace), so it is built once, here, with a drift that reads the weights of the call in
    progress from ``current``: ``train`` pushes ``theta`` (a tracer under ``jit``/``vmap``), runs PPO, pops it.
    One trace, and so one compile, serves every candidate; ppo.py is reused unchanged.
    """
    current: list[dict] = []  # the theta of the train call being traced or run; the drift is only called inside it
    inner = ppo.make_train(ppo_config, lambda r, a, p: drift_apply(current[-1], r, a, p, net))

    def train(key: jax.Array, agent_params: dict, theta: dict) -> dict:
        current.append(theta)
        try:
            return inner(key, agent_params)
        finally:
            current.pop()

    return train


def final_return(metrics: dict, last_fraction: float = 0.1) -> jax.Array:
    """Episode-weighted mean return over the last fraction of updates (``ppo.mean_return`` in jnp, traceable)."""
    episodes, return_sum = metrics["episodes"], metrics["return_sum"]
    window = ppo.final_window(episodes, last_fraction, jnp)
    ep, rs = (episodes * window).sum(-1).astype(jnp.float32), (return_sum * window).sum(-1)
    return jnp.where(ep > 0, rs / jnp.maximum(ep, 1.0), 0.0)


def make_fitness(
    ppo_config: ppo.PPOConfig, net: DriftNetConfig = DriftNetConfig(), num_inits: int = 4, seed: int = 0
) -> meta.FitnessFn:
    """``fitness(key, theta) -> final PPO return`` with drift ``theta``.

    The agent's initial weights come from a pool of ``num_inits`` made outside any ``vmap`` (flax's orthogonal
    initializer can hang inside ``jit(vmap)``, ARCHITECTURE.md section 9); ``key`` picks one and seeds the training.
    """
    pool = ppo.init_params(ppo_config, jax.random.split(jax.random.key(seed), num_inits))
    train = make_train_with_drift_params(ppo_config, net)

    def fitness(key: jax.Array, theta: dict) -> jax.Array:
        pick_key, train_key = jax.random.split(key)
        index = jax.random.randint(pick_key, (), 0, num_inits)
        agent = jax.tree_util.tree_map(lambda x: x[index], pool)
        return final_return(train(train_key, agent, theta)["metrics"])

    return fitness


def meta_train_talpo(
    key: jax.Array,
    ppo_config: ppo.PPOConfig,
    es_config: meta.ESConfig | None = None,
    net: DriftNetConfig = DriftNetConfig(),
    generations: int = 8,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 5,
    num_inits: int = 4,
) -> dict:
    """ES meta-training of the TA-LPO drift; host values, with ``drift_params`` (the search mean) added."""
    es_config = es_config or meta.ESConfig(std=0.05, lr=0.02)
    init_key, run_key = jax.random.split(key)
    mean = init_drift_params(init_key, net)
    fitness = make_fitness(ppo_config, net, num_inits)
    out = meta.meta_train(run_key, fitness, mean, es_config, generations, checkpoint_dir, checkpoint_every)
    out["drift_params"] = out["mean"]
    return out



def _literal(array: np.ndarray) -> str:
    """A nested Python list literal of float32 values (``repr`` of each float32 round-trips exactly)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 1:
        return "[" + ", ".join(repr(float(x)) for x in array) + "]"
    return "[\n" + ",\n".join("        " + _literal(row) for row in array) + ",\n    ]"


def render_source(theta: dict, net: DriftNetConfig = DriftNetConfig(), doc: str | None = None) -> str:
    """Plug-in source of the learned drift with its weights as literal constants: only ``jax.numpy`` is imported,
    so it passes the ``lpo`` template's validation gate and runs as any other ``source`` candidate. Computes
    exactly :func:`drift_apply` (same features, same float32 weights)."""
    theta = jax.tree_util.tree_map(np.asarray, theta)
    doc = doc or (f"TA-LPO drift meta-learned by ES: relu(MLP(features)), {net.layers} tanh layer(s) of {net.hidden}, "
                  f"{'temporal' if net.temporal else 'non-temporal'} LPO features of (r, A{', n/N' if net.temporal else ''}).")
    lines = ["import jax.numpy as jnp", ""]
    for i in range(net.layers):
        lines.append(f"W{i} = jnp.array({_literal(theta[f'w{i}'])}, dtype=jnp.float32)")
    lines.append(f"OUT = jnp.array({_literal(theta['out'])}, dtype=jnp.float32)")
    lines += [
        "",
        "",
        "def drift(ratio, advantage, progress):",
        f'    """{doc}"""',
        "    rm1 = ratio - 1.0",
        "    logr = jnp.log(jnp.maximum(ratio, 1e-8))",
        "    base = [rm1, logr, rm1 ** 2, logr ** 2, rm1 * advantage, logr * advantage, rm1 ** 2 * advantage,",
        "            logr ** 2 * advantage]",
        "    feats = jnp.stack(jnp.broadcast_arrays(*base), axis=-1)",
    ]
    if net.temporal:
        lines.append("    feats = jnp.concatenate([feats, feats * jnp.asarray(progress, feats.dtype)[..., None]], axis=-1)")
    lines.append("    h = feats")
    for i in range(net.layers):
        lines.append(f"    h = jnp.tanh(h @ W{i})")
    lines += ["    d = h @ OUT", "    return jnp.maximum(d, 0.0)", ""]
    return "\n".join(lines)
