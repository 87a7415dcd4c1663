"""TA-LPO drift network and its ES fitness (jaxlib_kernels.es.talpo): D >= 0, D(1, A) = 0, traced drift weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels import ppo
from jaxlib_kernels.es import meta, talpo
from jaxlib_kernels.templates import lpo

TINY = ppo.PPOConfig(num_envs=4, num_steps=16, total_timesteps=4 * 16 * 4, update_epochs=2, num_minibatches=2,
                     hidden=16)


@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_is_nonnegative_and_zero_at_ratio_one(temporal, seed):
    net = talpo.DriftNetConfig(hidden=16, temporal=temporal, init_scale=3.0)
    theta = talpo.init_drift_params(jax.random.key(seed), net)
    k_r, k_a, k_p = jax.random.split(jax.random.key(100 + seed), 3)
    ratio = jnp.exp(0.7 * jax.random.normal(k_r, (256,)))
    advantage = 3.0 * jax.random.normal(k_a, (256,))
    progress = jax.random.uniform(k_p, (256,))
    drift = jax.jit(talpo.make_drift(theta, net))
    values = drift(ratio, advantage, progress)
    assert values.shape == ratio.shape
    assert float(values.min()) >= 0.0
    assert float(values.max()) > 0.0  # not trivially zero
    at_one = drift(jnp.ones(256), advantage, progress)
    np.testing.assert_array_equal(np.asarray(at_one), 0.0)


def test_features_vanish_at_ratio_one_and_temporal_doubles_them():
    a = jnp.linspace(-2, 2, 5)
    feats = talpo.lpo_features(jnp.ones(5), a, jnp.float32(0.5), temporal=True)
    assert feats.shape == (5, 2 * talpo.NUM_LPO_FEATURES)
    np.testing.assert_array_equal(np.asarray(feats), 0.0)
    assert talpo.lpo_features(jnp.ones(5), a, 0.5, temporal=False).shape == (5, talpo.NUM_LPO_FEATURES)


def test_drift_passes_the_lpo_template_check():
    theta = talpo.init_drift_params(jax.random.key(0))
    assert lpo.check_plugin(talpo.make_drift(theta), jax.random.key(1)) == []


def test_flat_vector_round_trip():
    net = talpo.DriftNetConfig(hidden=8, layers=2)
    theta = talpo.init_drift_params(jax.random.key(0), net)
    flat, unravel = talpo.flatten(theta)
    assert flat.shape == (talpo.num_params(net),)
    assert talpo.num_params(net) == 16 * 8 + 8 * 8 + 8
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(talpo.unflatten(flat, net))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(unravel(flat))):
        np.testing.assert_array_equal(a, b)


def test_traced_drift_weights_match_a_static_drift():
    """The drift weights as a traced argument give what ppo.make_train gives with the drift baked in."""
    net = talpo.DriftNetConfig(hidden=8)
    theta = talpo.init_drift_params(jax.random.key(3), net)
    agent = jax.tree_util.tree_map(lambda x: x[0], ppo.init_params(TINY, jax.random.split(jax.random.key(0), 1)))
    key = jax.random.key(5)
    traced = jax.jit(talpo.make_train_with_drift_params(TINY, net))(key, agent, theta)["metrics"]
    static = jax.jit(ppo.make_train(TINY, talpo.make_drift(theta, net)))(key, agent)["metrics"]
    for name in ("episodes", "return_sum", "drift", "policy_loss"):
        np.testing.assert_allclose(np.asarray(traced[name]), np.asarray(static[name]), rtol=1e-4, atol=1e-5)


def test_population_of_drifts_compiles_once_and_is_deterministic():
    net = talpo.DriftNetConfig(hidden=8)
    mean = talpo.init_drift_params(jax.random.key(0), net)
    base = talpo.make_fitness(TINY, net, num_inits=2)
    traces = []

    def fitness(key, theta):
        traces.append(1)
        return base(key, theta)

    config = meta.ESConfig(population_size=4, std=0.1, lr=0.05)
    strategy, es_params = meta.make_strategy(config, mean)
    step = meta.make_meta_step(strategy, fitness)
    state0 = meta.canonical_state(meta.init_state(jax.random.key(1), strategy, es_params, mean))

    def generations(seed, n=3):
        state, history = state0, []
        for g in range(n):
            state, metrics = step(jax.random.fold_in(jax.random.key(seed), g), state, es_params)
            history.append(float(metrics["return_mean"]))
        return state, np.asarray(history)

    state_a, returns_a = generations(0)
    state_b, returns_b = generations(0)
    _, returns_c = generations(1)
    assert len(traces) == 1  # one trace of the fitness serves 9 generations of 4 candidates
    assert np.all(np.isfinite(returns_a)) and np.all((returns_a >= 0) & (returns_a <= 1))
    np.testing.assert_array_equal(returns_a, returns_b)
    np.testing.assert_array_equal(np.asarray(state_a.mean), np.asarray(state_b.mean))
    assert not np.array_equal(returns_a, returns_c)


def test_meta_train_talpo_with_resume(tmp_path):
    net = talpo.DriftNetConfig(hidden=8)
    es = meta.ESConfig(population_size=4, std=0.1, lr=0.05)
    first = talpo.meta_train_talpo(jax.random.key(0), TINY, es, net, generations=2, checkpoint_dir=tmp_path,
                                   checkpoint_every=1, num_inits=2)
    again = talpo.meta_train_talpo(jax.random.key(0), TINY, es, net, generations=3, checkpoint_dir=tmp_path,
                                   checkpoint_every=1, num_inits=2)
    assert first["resumed_from"] == 0 and again["resumed_from"] == 2
    assert again["metrics"]["return_mean"].shape == (3,)
    np.testing.assert_array_equal(first["metrics"]["return_mean"], again["metrics"]["return_mean"][:2])
    theta = jax.tree_util.tree_map(jnp.asarray, again["drift_params"])
    values = talpo.make_drift(theta, net)(jnp.array([0.5, 1.0, 2.0]), jnp.array([1.0, -1.0, 1.0]), 0.5)
    assert float(values[1]) == 0.0 and float(values.min()) >= 0.0


def test_rendered_source_is_the_same_drift_and_passes_the_gate(tmp_path):
    """The learned drift as plug-in source (weights as literals) computes drift_apply exactly and is accepted by
    the lpo validation gate, so the AI-Scientist stages can run it as a candidate."""
    from jaxlib_kernels import plugin
    from tasks.runtime import sandbox

    net = talpo.DriftNetConfig(hidden=8, init_scale=3.0)
    theta = talpo.init_drift_params(jax.random.key(4), net)
    source = talpo.render_source(theta, net)
    k_r, k_a = jax.random.split(jax.random.key(5))
    ratio = jnp.exp(0.7 * jax.random.normal(k_r, (200,)))
    advantage = 2.0 * jax.random.normal(k_a, (200,))
    fn = plugin.load_plugin(source, "drift")
    for progress in (0.0, 0.4, 1.0):
        np.testing.assert_array_equal(np.asarray(fn(ratio, advantage, jnp.float32(progress))),
                                      np.asarray(talpo.drift_apply(theta, ratio, advantage, jnp.float32(progress), net)))
    assert float(jnp.max(fn(ratio, advantage, jnp.float32(1.0)))) > 0.0
    result = sandbox.validate_source(source, "lpo", workdir=tmp_path)
    assert result.accepted, result.reason
