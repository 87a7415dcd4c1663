"""HaDES behaviour distillation (jaxlib_kernels.templates.hades): envs, cloning, one compile, and CartPole solved."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels.es import meta
from jaxlib_kernels.registry import UnknownNameError
from jaxlib_kernels.templates import hades

SMALL = hades.HadesConfig(num_pairs=4, width=8, eval_episodes=1)


def test_cartpole_adapter_follows_gymnax_1_api():
    env = hades.make_env("CartPole-v1")
    assert (env.obs_size, env.num_actions, env.max_steps) == (4, 2, 500)
    state, obs = env.reset(jax.random.key(0))
    state, obs, reward, done = env.step(jax.random.key(1), state, jnp.int32(1))
    assert obs.shape == (4,) and obs.dtype == jnp.float32
    assert float(reward) == 1.0 and not bool(done)


def test_unknown_env_suggests_close_matches_and_continuous_is_refused():
    with pytest.raises(UnknownNameError, match="CartPole-v1"):
        hades.make_env("CartPole-v2")
    with pytest.raises(ValueError, match="discrete"):
        hades.make_env("Pendulum-v1")


def test_behaviour_cloning_fits_the_dataset():
    env = hades.make_env("CartPole-v1")
    dataset = hades.init_dataset(jax.random.key(0), dataclasses.replace(SMALL, logit_init_std=3.0), env)
    policy = hades.init_policy(jax.random.key(1), env.obs_size, env.num_actions, width=32)
    cloned = jax.jit(hades.behaviour_clone)(policy, dataset)
    np.testing.assert_array_equal(
        np.argmax(hades.policy_logits(cloned, dataset["obs"]), -1), np.argmax(dataset["logits"], -1)
    )


def test_dataset_population_compiles_once_and_is_deterministic():
    mean = hades.initial_candidate(jax.random.key(0), SMALL)
    base = hades.make_fitness(SMALL, "hades_r")
    traces = []

    def fitness(key, dataset):
        traces.append(1)
        return base(key, dataset)

    strategy, es_params = meta.make_strategy(meta.ESConfig(population_size=8, std=0.1, lr=0.05), mean)
    step = meta.make_meta_step(strategy, fitness)
    state0 = meta.canonical_state(meta.init_state(jax.random.key(1), strategy, es_params, mean))

    def generations(seed, n=3):
        state, out = state0, []
        for g in range(n):
            state, metrics = step(jax.random.fold_in(jax.random.key(seed), g), state, es_params)
            out.append(float(metrics["return_mean"]))
        return np.asarray(out)

    a, b, c = generations(0), generations(0), generations(1)
    assert len(traces) == 1
    assert np.all((a >= 1) & (a <= 500))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("method", ["hades_f", "direct"])
def test_other_methods_run(method):
    out = hades.train(jax.random.key(0), SMALL, meta.ESConfig(population_size=4), generations=2, method=method)
    assert out["metrics"]["return_mean"].shape == (2,)
    if method == "direct":
        assert isinstance(out["mean"], list) and out["mean"][0]["w"].shape == (4, 8)
    else:
        assert out["mean"]["obs"].shape == (4, 4) and out["mean"]["logits"].shape == (4, 2)


def test_unknown_method_suggests_close_matches():
    with pytest.raises(ValueError, match="hades_r"):
        hades.make_fitness(SMALL, "hades-r")


@pytest.mark.parametrize("env_name", ["Breakout-MinAtar", "Navix-Empty-5x5-v0"])
def test_minatar_and_navix_fitness(env_name):
    config = hades.HadesConfig(env_name=env_name, max_steps=30, num_pairs=2, width=8, inner_steps=5, eval_episodes=1)
    dataset = hades.initial_candidate(jax.random.key(0), config)
    env = config.make_env()
    assert dataset["obs"].shape == (2, env.obs_size) and dataset["logits"].shape == (2, env.num_actions)
    value = jax.jit(hades.make_fitness(config))(jax.random.key(1), dataset)
    assert value.shape == () and np.isfinite(float(value)) and float(value) >= 0.0


def test_template_parts():
    dataset = hades.initial_candidate(jax.random.key(0), SMALL)
    assert hades.check_plugin(dataset) == []
    assert hades.check_plugin({"obs": np.zeros((3, 4)), "logits": np.zeros((2, 2))})
    assert hades.check_plugin({"obs": np.full((2, 4), np.nan), "logits": np.zeros((2, 2))})
    behaviour = hades.probe(dataset, SMALL)
    assert behaviour.shape == (32 * 2,) and np.allclose(behaviour.reshape(32, 2).sum(-1), 1.0, atol=1e-5)
    assert hades.TEMPLATE.name == "hades" and hades.TEMPLATE.check is hades.check_plugin
    for setting in hades.SETTINGS.values():
        assert setting.env in hades.ENVS
    for profile in hades.PROFILES.values():
        assert set(profile.settings) <= set(hades.SETTINGS) and set(profile.baselines) <= set(hades.BASELINES)
    transfer = hades.transfer_returns(jax.random.key(0), dataset, SMALL, widths=(4, 16), num_inits=2)
    assert set(transfer) == {4, 16}


@pytest.mark.slow
@pytest.mark.parametrize("num_pairs, seed", [(4, 2), (16, 4)])
def test_hades_solves_cartpole_for_fresh_policies(num_pairs, seed):
    """HaDES-R, OpenES population 64: fresh width-64 policies cloned on the found dataset average >= 450 of 500."""
    config = hades.HadesConfig(num_pairs=num_pairs)
    es = meta.ESConfig(population_size=64, std=0.1, lr=0.05)
    start = time.perf_counter()
    key = jax.random.key(seed)
    init_key, run_key = jax.random.split(key)
    mean = hades.initial_candidate(init_key, config)
    strategy, es_params = meta.make_strategy(es, mean)
    step = meta.make_meta_step(strategy, hades.make_fitness(config))
    fresh = jax.jit(jax.vmap(hades.make_hades_fitness(config), in_axes=(0, None)))
    fresh_keys = jax.random.split(jax.random.key(999), 16)  # never used by the search
    state = meta.canonical_state(meta.init_state(init_key, strategy, es_params, mean))
    best = 0.0
    for generation in range(60):
        state, _ = step(jax.random.fold_in(run_key, generation), state, es_params)
        if (generation + 1) % 10 == 0:
            best = float(fresh(fresh_keys, strategy.get_mean(state)).mean())
            if best >= 450:
                break
    print(f"HaDES CartPole, {num_pairs} pairs, seed {seed}: {generation + 1} generations, fresh return {best:.1f}, "
          f"{time.perf_counter() - start:.1f} s")
    assert best >= 450
