"""The ``lpo`` template: discover the drift of mirror learning for PPO-style agents on NAVIX gridworlds.

Sources: Lu et al., 2022, "Discovered Policy Optimisation" (LPO, and its closed form DPO); Jackson et al., 2024,
"Discovering Temporally-Aware Reinforcement Learning Algorithms" (TA-LPO: the drift sees training progress n/N);
Kuba et al., 2022, "Mirror Learning". Plug-in: ``drift(ratio, advantage, progress) -> drift >= 0``, same shape as
``ratio``. Metric: mean episodic return over the last tenth of training (MiniGrid's ``1 - 0.9 t / T``), higher is
better.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels import ppo, symbolic
from jaxlib_kernels.templates.base import Profile, Setting, Template

# Baselines as symbolic expressions, so novelty, the paper's formulas and codegen treat them like candidates.
PPO_CLIP = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], "A"]]
KL = ["mul", 3.0, ["sub", ["neg", "omr"], "logr"]]  # beta (r - 1 - log r) >= 0: a KL(pi_old || pi) estimator
NO_DRIFT = 0.0
# DPO, the closed form of the discovered LPO drift (Lu et al., 2022, alpha = 2, beta = 0.6)
_RM1_A = ["mul", ["neg", "omr"], "A"]
_LOGR_A = ["mul", "logr", "A"]
DPO = [
    "ifpos",
    "A",
    ["relu", ["sub", _RM1_A, ["mul", 2.0, ["tanh", ["mul", 0.5, _RM1_A]]]]],
    ["relu", ["sub", _LOGR_A, ["mul", 0.6, ["tanh", ["mul", 1.0 / 0.6, _LOGR_A]]]]],
]

BASELINES = {"ppo_clip": PPO_CLIP, "kl": KL, "no_drift": NO_DRIFT, "dpo": DPO}
BASELINE_LABELS = {
    "ppo_clip": "PPO clip",
    "kl": "KL drift",
    "no_drift": "No drift",
    "dpo": "LPO (DPO form)",
}

SETTINGS = {
    "empty5": Setting("empty5", "Navix-Empty-5x5-v0", held_out=False, description="Empty 5x5, fixed start"),
    "empty_random5": Setting(
        "empty_random5", "Navix-Empty-Random-5x5-v0", held_out=True, description="Empty 5x5, random start (held out)"
    ),
    "empty6": Setting("empty6", "Navix-Empty-6x6-v0", held_out=True, description="Empty 6x6 (held-out grid)"),
    "empty5_short": Setting(
        "empty5_short", "Navix-Empty-5x5-v0", timesteps_scale=0.5, held_out=True,
        description="Empty 5x5 with half the training horizon (held-out horizon)",
    ),
    "empty5_long": Setting(
        "empty5_long", "Navix-Empty-5x5-v0", timesteps_scale=2.0, held_out=True,
        description="Empty 5x5 with twice the training horizon (held-out horizon)",
    ),
    "doorkey5": Setting("doorkey5", "Navix-DoorKey-5x5-v0", held_out=True, description="DoorKey 5x5 (held out)"),
}

PROFILES = {
    "smoke": Profile(
        "smoke", num_ideas=1, seeds=4, total_timesteps=40_960, settings=("empty5", "empty_random5"),
        baselines=("ppo_clip", "kl", "no_drift"), search_generations=4, search_population=24,
    ),
    "default": Profile(
        "default", num_ideas=2, seeds=4, total_timesteps=98_304, settings=("empty5", "empty_random5", "empty5_short"),
        baselines=("ppo_clip", "kl", "no_drift", "dpo"), search_generations=6, search_population=32,
    ),
    "paper": Profile(
        "paper", num_ideas=4, seeds=8, total_timesteps=393_216,
        settings=("empty5", "empty_random5", "empty6", "empty5_short", "doorkey5"),
        baselines=("ppo_clip", "kl", "no_drift", "dpo"), search_generations=10, search_population=64,
    ),
}

# Probe grid for behavioural distance: log-spaced ratios, advantages, progress points.
PROBE_R = np.exp(np.linspace(np.log(0.5), np.log(2.0), 25))
PROBE_A = np.linspace(-2.0, 2.0, 17)
PROBE_P = np.array([0.0, 0.5, 1.0])


def ppo_config(setting: Setting, total_timesteps: int) -> ppo.PPOConfig:
    """The PPO configuration of a setting at a profile's training budget."""
    steps = int(total_timesteps * setting.timesteps_scale)
    return ppo.PPOConfig(env_name=setting.env, max_steps=setting.max_steps, total_timesteps=steps)


def evaluate(setting: Setting, total_timesteps: int, drift: Callable, seeds: list[int]) -> dict:
    """Train PPO with ``drift`` on every seed in one compiled call; host arrays of curves and final returns."""
    config = ppo_config(setting, total_timesteps)
    metrics = ppo.train_seeds(config, drift, seeds)
    env_steps = (np.arange(config.num_updates) + 1) * config.batch_size
    return {
        "env_steps": env_steps,
        "episodes": metrics["episodes"],
        "return_sum": metrics["return_sum"],
        "final_return": ppo.mean_return(metrics),
        "drift": metrics["drift"],
    }


@jax.jit
def _grid() -> tuple[jax.Array, jax.Array, jax.Array]:
    r, a, p = jnp.meshgrid(jnp.asarray(PROBE_R), jnp.asarray(PROBE_A), jnp.asarray(PROBE_P), indexing="ij")
    return r.astype(jnp.float32), a.astype(jnp.float32), p.astype(jnp.float32)


def probe(drift: Callable) -> np.ndarray:
    """The drift's values on the probe grid (r x A x progress), flattened: its behaviour."""
    r, a, p = _grid()
    values = np.asarray(jax.jit(drift)(r, a, p), dtype=np.float64)
    return np.broadcast_to(values, r.shape).reshape(-1)


SEARCH_SPACE = {
    "variables": ["r", "A", "logr", "omr", "p"],
    "unary": ["relu", "abs", "sq", "tanh", "neg"],
    "binary": ["add", "sub", "mul", "max", "min"],
    "constants": [0.1, 0.2, 0.5, 1.0, 2.0],
}



def baseline_source(name: str) -> str:
    return symbolic.render_source(BASELINES[name], "drift", doc=f"{BASELINE_LABELS[name]} drift.")


def check_plugin(drift: Callable, key: jax.Array) -> list[str]:
    """Problems of a drift on random inputs: shape, finiteness, sign, gradients, determinism, jit. Empty = fine."""
    problems: list[str] = []
    k_r, k_a, k_p = jax.random.split(key, 3)
    shape = (64, 8)
    ratio = jnp.exp(0.5 * jax.random.normal(k_r, shape))
    advantage = 2.0 * jax.random.normal(k_a, shape)
    progress = jax.random.uniform(k_p, ())
    out = jax.jit(drift)(ratio, advantage, progress)
    out = jnp.asarray(out)
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


TEMPLATE = Template(
    name="lpo",
    title="Discovering drift functions for mirror learning",
    plugin_name="drift",
    plugin_signature="drift(ratio, advantage, progress) -> array of ratio's shape, >= 0",
    metric="final_return",
    metric_description="mean episodic return over the last 10% of training",
    baselines=BASELINES,
    baseline_labels=BASELINE_LABELS,
    settings=SETTINGS,
    profiles=PROFILES,
    evaluate=evaluate,
    probe=probe,
    search_space=SEARCH_SPACE,
    check=check_plugin,
)
