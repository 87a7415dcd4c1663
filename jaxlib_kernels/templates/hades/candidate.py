"""The ``hades`` candidate: a JSON object that configures the ES meta-training of a synthetic dataset.

Keys (all but ``method`` optional; :data:`DEFAULTS` fills the rest):

* ``method``: ``"hades_r"`` (a fresh policy initialisation per evaluation, Lupu et al., 2024), ``"hades_f"`` (one
  fixed initialisation) or ``"direct"`` (OpenES on the policy weights themselves: the baseline).
* ``es_lr`` (Adam step on the ES mean), ``es_std`` (OpenES perturbation scale): every method.
* ``num_pairs``, ``inner_steps``, ``inner_lr``, ``obs_init_std``, ``logit_init_std``: the dataset methods only
  (``direct`` refuses them, so a direct candidate never carries keys that change nothing).

:func:`resolve` turns a candidate into the kernel's :class:`HadesConfig` overrides and :class:`meta.ESConfig`;
:func:`check` is the gate (known keys, types, ranges, then the initial dataset's shapes and finiteness, no
training); :func:`probe` is the behavioural probe for novelty: a scaled feature vector in which one doubling of
one numeric key, or a change of method, is a distance of about one (``PROBE_SCALE``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxlib_kernels.es import meta
from jaxlib_kernels.templates.hades.kernel import METHODS, HadesConfig, check_dataset, init_dataset, make_env

# key -> (type, low, high, methods it applies to); bounds are inclusive except where noted in OPEN_LOW
SPEC: dict[str, tuple[type, float, float, tuple[str, ...]]] = {
    "es_lr": (float, 1e-4, 1.0, METHODS),
    "es_std": (float, 1e-3, 1.0, METHODS),
    "num_pairs": (int, 1, 256, ("hades_r", "hades_f")),
    "inner_steps": (int, 1, 200, ("hades_r", "hades_f")),
    "inner_lr": (float, 1e-4, 0.5, ("hades_r", "hades_f")),
    "obs_init_std": (float, 1e-2, 5.0, ("hades_r", "hades_f")),
    "logit_init_std": (float, 1e-2, 5.0, ("hades_r", "hades_f")),
}
KEYS = ("method", *SPEC)
DEFAULTS: dict[str, Any] = {
    "es_lr": meta.ESConfig().lr, "es_std": meta.ESConfig().std,
    "num_pairs": HadesConfig.num_pairs, "inner_steps": HadesConfig.inner_steps, "inner_lr": HadesConfig.inner_lr,
    "obs_init_std": HadesConfig.obs_init_std, "logit_init_std": HadesConfig.logit_init_std,
}
LABELS = {"hades_r": "HaDES-R", "hades_f": "HaDES-F", "direct": "Direct OpenES"}
DESCRIPTIONS = {
    "method": "hades_r | hades_f | direct",
    "es_lr": "the Adam learning rate of the OpenES mean",
    "es_std": "the OpenES perturbation standard deviation",
    "num_pairs": "the number N of synthetic state-action pairs",
    "inner_steps": "the number of behaviour-cloning Adam steps per fitness evaluation",
    "inner_lr": "the behaviour-cloning Adam learning rate",
    "obs_init_std": "the standard deviation of the initial synthetic states",
    "logit_init_std": "the standard deviation of the initial synthetic action logits",
}
CHECK_ENV = "CartPole-v1"  # the training environment; the gate builds the initial dataset for it


def applicable(method: str) -> tuple[str, ...]:
    """The numeric keys that ``method`` takes."""
    return tuple(k for k, (_, _, _, methods) in SPEC.items() if method in methods)


def normalise(candidate: dict) -> dict:
    """The candidate with every applicable key filled from :data:`DEFAULTS` (call :func:`problems` first)."""
    method = candidate["method"]
    return {"method": method} | {k: candidate.get(k, DEFAULTS[k]) for k in applicable(method)}


def problems(candidate: Any) -> list[str]:
    """Schema problems of a candidate (keys, types, ranges); empty = fine. Cheap: no JAX."""
    if not isinstance(candidate, dict):
        return [f"a hades candidate is a JSON object, got {type(candidate).__name__}"]
    method = candidate.get("method")
    if method is None:
        return [f"missing key 'method' (one of {', '.join(METHODS)})"]
    if method not in METHODS:
        return [f"method must be one of {', '.join(METHODS)}, got {method!r}"]
    out = []
    unknown = sorted(set(candidate) - set(KEYS))
    if unknown:
        out.append(f"unknown key(s) {unknown}; known keys: {', '.join(KEYS)}")
    for key, value in candidate.items():
        if key not in SPEC:
            continue
        kind, low, high, methods = SPEC[key]
        if method not in methods:
            out.append(f"key {key!r} does not apply to method {method!r} (it applies to {', '.join(methods)})")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(f"{key} must be a number, got {type(value).__name__} {value!r}")
            continue
        if kind is int and not (isinstance(value, int) or float(value).is_integer()):
            out.append(f"{key} must be an integer, got {value!r}")
            continue
        if not math.isfinite(value) or not low <= value <= high:
            out.append(f"{key} must lie in [{low:g}, {high:g}], got {value!r}")
    return out


def resolve(candidate: dict, base: HadesConfig, es_base: meta.ESConfig) -> tuple[str, HadesConfig, meta.ESConfig]:
    """``(method, config, es_config)`` of a valid candidate over a setting's base configurations."""
    c = normalise(candidate)
    es_config = dataclasses.replace(es_base, lr=float(c["es_lr"]), std=float(c["es_std"]))
    if c["method"] == "direct":
        return "direct", base, es_config
    config = dataclasses.replace(
        base, num_pairs=int(c["num_pairs"]), inner_steps=int(c["inner_steps"]), inner_lr=float(c["inner_lr"]),
        obs_init_std=float(c["obs_init_std"]), logit_init_std=float(c["logit_init_std"]),
        fixed_init=c["method"] == "hades_f",
    )
    return c["method"], config, es_config


def check(candidate: Any, key: jax.Array | None = None) -> list[str]:
    """The gate: schema problems, then the initial dataset for CartPole-v1 (shapes, finiteness). No training."""
    found = problems(candidate)
    if found or candidate["method"] == "direct":
        return found
    _, config, _ = resolve(candidate, HadesConfig(env_name=CHECK_ENV), meta.ESConfig())
    env = make_env(CHECK_ENV)
    dataset = init_dataset(jax.random.key(0) if key is None else key, config, env)
    return check_dataset(dataset, config.num_pairs, env)


# --- behavioural probe ----------------------------------------------------------------------------------------------

_LOG_KEYS = tuple(SPEC)  # every numeric key, on a log2 scale: one doubling = one unit
METHOD_WEIGHT = 2.0  # a change of method moves two one-hot entries by this much
PROBE_SIZE = len(_LOG_KEYS) + len(METHODS)
PROBE_SCALE = 1.0 / math.sqrt(PROBE_SIZE)  # distance 1 = one doubling of one key
NOVELTY_THRESHOLD = 0.5  # below: a change of less than a factor sqrt(2) in one key (or the same spread over several)


def probe(candidate: dict) -> np.ndarray:
    """Behaviour of a configuration: log2 of every numeric key (defaults for keys a method lacks) and the method
    one-hot times :data:`METHOD_WEIGHT`. ``Template.distance`` divides RMS differences by :data:`PROBE_SCALE`."""
    method = candidate["method"]
    values = {**DEFAULTS, **{k: v for k, v in candidate.items() if k in SPEC}}
    logs = [math.log2(float(values[k])) for k in _LOG_KEYS]
    onehot = [METHOD_WEIGHT * float(m == method) for m in METHODS]
    return np.asarray(logs + onehot, dtype=np.float64)


def distance(a: dict, b: dict) -> float:
    """The template's distance between two candidates (as ``Template.distance`` of their probes)."""
    diff = probe(a) - probe(b)
    return float(np.sqrt(np.mean(diff**2))) / PROBE_SCALE
