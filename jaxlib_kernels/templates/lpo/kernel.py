"""The ``lpo`` template's kernel glue: PPO with a drift on NAVIX grids, the gate's checks and the behaviour probe.

Sources: Lu et al., 2022, "Discovered Policy Optimisation"; Jackson et al., 2024, "Discovering Temporally-Aware
Reinforcement Learning Algorithms"; Kuba et al., 2022, "Mirror Learning". Plug-in:
``drift(ratio, advantage, progress) -> drift >= 0`` of ``ratio``'s shape. Metric: mean episodic return over the
last tenth of training (MiniGrid's ``1 - 0.9 t / T``), maximised.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels import ppo
from jaxlib_kernels.population import template_population
from jaxlib_kernels.templates.base import Setting, with_hparams

# Probe grid for behavioural distance: log-spaced ratios, advantages, progress points.
PROBE_R = np.exp(np.linspace(np.log(0.5), np.log(2.0), 25))
PROBE_A = np.linspace(-2.0, 2.0, 17)
PROBE_P = np.array([0.0, 0.5, 1.0])


def ppo_config(setting: Setting, budget: int) -> ppo.PPOConfig:
    """The PPO configuration of a setting at a unit's budget (environment steps, already scaled)."""
    return ppo.PPOConfig(env_name=setting.env, max_steps=setting.max_steps, total_timesteps=int(budget))


def train_programs(config: ppo.PPOConfig, programs, seeds: list[int]) -> np.ndarray:
    """The final return (C, S) of interpreted drift ``programs`` on ``seeds``: one compiled population call (the
    discovery engine's fitness)."""
    return ppo.mean_return(ppo.train_programs(config, programs, seeds))


def evaluate(setting: Setting, budget: int, drift: Callable, seeds: list[int], hparams: dict | None = None) -> dict:
    """Train PPO with ``drift`` on every seed in one compiled call; the unit result of the template contract.

    ``curve``: per update, the mean return of the episodes started in it, each counted to its end (``ppo.Tally``:
    not only the short episodes that ended within the update); NaN where none started."""
    config = with_hparams(ppo_config(setting, budget), hparams)
    metrics = ppo.train_seeds(config, drift, seeds)
    episodes = np.asarray(metrics["episodes"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(episodes > 0, np.asarray(metrics["return_sum"], dtype=np.float64) / episodes, np.nan)
    return {
        "x": (np.arange(config.num_updates) + 1) * config.batch_size,
        "curve": curve,
        "final": ppo.mean_return(metrics),
        "episodes": metrics["episodes"],
        "drift": metrics["drift"],
    }


# Template.population: the final return (N, S) of every (drift text, hyperparameters) pair, the drifts that are
# expression trees trained in one compiled call with their lr, ent_coef and update_epochs as per-member values
population = template_population(
    ppo_config, evaluate, lambda config, programs, values, seeds: ppo.mean_return(
        ppo.train_population(config, programs, values, seeds)), ppo.TRACED)


@jax.jit
def _grid() -> tuple[jax.Array, jax.Array, jax.Array]:
    r, a, p = jnp.meshgrid(jnp.asarray(PROBE_R), jnp.asarray(PROBE_A), jnp.asarray(PROBE_P), indexing="ij")
    return r.astype(jnp.float32), a.astype(jnp.float32), p.astype(jnp.float32)


def probe(drift: Callable) -> np.ndarray:
    """The drift's values on the probe grid (r x A x progress), flattened: its behaviour."""
    r, a, p = _grid()
    values = np.asarray(jax.jit(drift)(r, a, p), dtype=np.float64)
    return np.broadcast_to(values, r.shape).reshape(-1)


def check_plugin(drift: Callable, key: jax.Array) -> list[str]:
    """Problems of a drift on random inputs: shape, finiteness, sign, gradients, determinism, jit. Empty = fine."""
    problems: list[str] = []
    k_r, k_a, k_p = jax.random.split(key, 3)
    shape = (64, 8)
    ratio = jnp.exp(0.5 * jax.random.normal(k_r, shape))
    advantage = 2.0 * jax.random.normal(k_a, shape)
    progress = jax.random.uniform(k_p, ())
    out = jnp.asarray(jax.jit(drift)(ratio, advantage, progress))
    if out.shape != shape:
        return [f"returned shape {tuple(out.shape)}, expected {shape} (the shape of ratio)"]
    if not bool(jnp.all(jnp.isfinite(out))):
        return [f"returned non-finite values ({int((~jnp.isfinite(out)).sum())} of {out.size} are NaN or inf)"]
    if float(out.min()) < -1e-5:
        problems.append(f"returned negative drift (min {float(out.min()):.3g}); a drift must be >= 0")
    grad = jax.grad(lambda r: jnp.sum(drift(r, advantage, progress)))(ratio)
    if not bool(jnp.all(jnp.isfinite(grad))):
        problems.append("gradient with respect to ratio is not finite")
    again = jax.jit(drift)(ratio, advantage, progress)
    if not bool(jnp.array_equal(out, again)):
        problems.append("not deterministic: two calls on the same inputs differ")
    edge = jnp.asarray(jax.jit(drift)(jnp.array([1e-3, 1.0, 50.0]), jnp.array([5.0, -5.0, 0.0]), jnp.float32(1.0)))
    if edge.shape != (3,) or not bool(jnp.all(jnp.isfinite(edge))):
        problems.append("non-finite or misshapen output at extreme ratios (1e-3, 50)")
    return problems
