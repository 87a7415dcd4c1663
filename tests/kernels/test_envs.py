"""The environment protocol (jaxlib_kernels.envs): gymnax 1.0's shape over navix and gymnax, one registry."""

import gymnax
import jax
import jax.numpy as jnp
import navix as nx
import numpy as np
import pytest

from jaxlib_kernels import envs
from jaxlib_kernels.profiling import count_compilations

IDS = ["Navix-Empty-5x5-v0", "Navix-Empty-Random-6x6-v0", "Navix-DoorKey-5x5-v0", "Navix-FourRooms-v0"]
CONFORMANCE = ["Navix-Empty-Random-6x6-v0", "CartPole-v1"]  # one navix and one gymnax id


def assert_trees_equal(a, b):
    """Leaf by leaf, typed keys through their data (navix keeps a key in its state)."""
    def host(x):
        x = jnp.asarray(x)
        return np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)

    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(host(x), host(y)), a, b)


def vstep(env):
    """``jit(vmap(step))`` over (key, state, action) with shared params."""
    return jax.vmap(env.step, in_axes=(0, 0, 0, None))


def test_one_registry_reaches_every_navix_and_gymnax_id():
    assert set(envs.ENVS) == set(nx.registry()) | set(gymnax.registered_envs)
    assert not set(envs.NAVIX_IDS) & set(envs.GYMNAX_IDS)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError) as err:
        envs.make("Navix-Empty-5x6-v0")
    assert "did you mean" in str(err.value) and "Navix-Empty-5x5-v0" in str(err.value)
    with pytest.raises(KeyError, match="CartPole-v1"):
        envs.make("CartPole-v2")


def test_a_gymnax_id_imports_gymnax_only():
    """navix costs seconds to import; a process that only needs CartPole (HaDES, its gate) does not pay for it."""
    import subprocess
    import sys

    code = ("import sys; from jaxlib_kernels import envs; env = envs.make('CartPole-v1', max_steps=50); "
            "print(env.name, env.max_steps, 'navix' in sys.modules, 'gymnax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["CartPole-v1", "50", "False", "True"]


def test_continuous_gymnax_ids_are_refused():
    with pytest.raises(ValueError, match="discrete"):
        envs.make("Pendulum-v1")


def test_minigrid_horizons():
    assert envs.make("Navix-Empty-8x8-v0").max_steps == 256
    assert envs.make("Navix-DoorKey-5x5-v0").max_steps == 250
    assert envs.make("Navix-Empty-5x5-v0", max_steps=17).max_steps == 17
    assert envs.make("CartPole-v1").max_steps == 500
    assert envs.make("CartPole-v1", max_steps=10).default_params.max_steps_in_episode == 10


@pytest.mark.parametrize("name", CONFORMANCE)
def test_protocol_shapes_and_dtypes(name):
    env = envs.make(name, max_steps=12)
    assert isinstance(env, envs.Env)
    assert isinstance(env.num_actions, int) and isinstance(env.obs_size, int) and env.max_steps == 12
    params = env.default_params
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == (env.obs_size,) and obs.dtype == jnp.float32
    assert isinstance(state, envs.EnvState)
    out = env.step(jax.random.key(1), state, jnp.int32(0), params)
    assert len(out) == 6
    obs, state, reward, terminated, truncated, info = out
    assert obs.shape == (env.obs_size,) and obs.dtype == jnp.float32
    assert reward.shape == () and reward.dtype == jnp.float32
    assert terminated.dtype == jnp.bool_ and truncated.dtype == jnp.bool_
    assert isinstance(info, envs.StepInfo)
    assert info.returned_episode_return.dtype == jnp.float32 and info.returned_episode_length.dtype == jnp.int32
    # params=None means the defaults, as in gymnax
    a = env.step(jax.random.key(1), env.reset(jax.random.key(0))[1], jnp.int32(0))
    b = env.step(jax.random.key(1), env.reset(jax.random.key(0), params)[1], jnp.int32(0), params)
    assert_trees_equal(a, b)


@pytest.mark.parametrize("name", CONFORMANCE)
def test_keys_are_explicit(name):
    """Everything random comes from the keys passed in: same keys, same results; the episode a step starts after an
    end is drawn from that step's key (max_steps=1: every step ends an episode)."""
    env = envs.make(name, max_steps=1)
    params = env.default_params
    _, state = env.reset(jax.random.key(0), params)
    step = jax.jit(env.step)
    action = jnp.int32(1)
    first = step(jax.random.key(5), state, action, params)
    again = step(jax.random.key(5), state, action, params)
    assert_trees_equal(first, again)
    assert bool(first[3] | first[4])  # the episode ended ...
    new_obs = {tuple(np.asarray(step(jax.random.key(k), state, action, params)[0]).tolist()) for k in range(8)}
    assert len(new_obs) > 1  # ... and the next one depends on the step's key
    resets = {tuple(np.asarray(env.reset(jax.random.key(k), params)[0]).tolist()) for k in range(8)}
    assert len(resets) > 1


@pytest.mark.parametrize("name", CONFORMANCE)
def test_jit_vmap_and_a_second_call_compiles_nothing(name):
    env = envs.make(name, max_steps=8)
    params = env.default_params
    batch = 4

    @jax.jit
    def rollout(key):
        key, reset_key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, batch), params)

        def body(carry, step_key):
            state, obs = carry
            action_key, env_key = jax.random.split(step_key)
            action = jax.random.randint(action_key, (batch,), 0, env.num_actions)
            obs, state, reward, terminated, truncated, info = vstep(env)(
                jax.random.split(env_key, batch), state, action, params
            )
            return (state, obs), (reward, terminated | truncated, info.returned_episode_length)

        (_, obs), out = jax.lax.scan(body, (state, obs), jax.random.split(key, 20))
        return obs, out

    obs, (reward, done, lengths) = jax.block_until_ready(rollout(jax.random.key(0)))
    assert obs.shape == (batch, env.obs_size) and reward.shape == (20, batch)
    assert np.asarray(done).any() and (np.asarray(lengths)[np.asarray(done)] <= 8).all()
    with count_compilations() as counter:
        jax.block_until_ready(rollout(jax.random.key(1)))
    assert counter.compiles == 0


@pytest.mark.parametrize("name", IDS)
def test_navix_resets_in_the_same_step(name):
    env = envs.make(name, max_steps=12)
    params = env.default_params
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), 4), params)

    def rollout(state, key):
        _, state, _, terminated, truncated, info = vstep(env)(
            jax.random.split(key, 4), state, jnp.zeros(4, jnp.int32), params
        )
        return state, (terminated | truncated, truncated, info.returned_episode_length, state.episode_length)

    keys = jax.random.split(jax.random.key(1), 30)
    _, (done, truncated, lengths, running) = jax.jit(lambda s: jax.lax.scan(rollout, s, keys))(state)
    done, truncated, lengths, running = map(np.asarray, (done, truncated, lengths, running))
    # turning left forever never reaches the goal: every episode is truncated at exactly max_steps,
    # and the state right after is already a fresh episode (no wasted step)
    assert done.sum(0).tolist() == [2, 2, 2, 2] and (truncated == done).all()
    assert set(lengths[done].tolist()) == {12}
    assert (running[done] == 0).all()


def test_navix_adapter_follows_navix_public_step_within_an_episode():
    """Between resets the adapter is navix's own ``env.step``: the same observations and rewards."""
    env = envs.make("Navix-DoorKey-5x5-v0")
    actions = jax.random.randint(jax.random.key(3), (40,), 0, env.num_actions)
    key = jax.random.key(0)
    obs, state = env.reset(key)
    timestep = env.env.reset(key)
    np.testing.assert_array_equal(obs, env.observe(timestep))
    step, direct = jax.jit(env.step), jax.jit(env.env.step)
    for i, action in enumerate(actions):
        obs, state, reward, terminated, truncated, _ = step(jax.random.key(100 + i), state, action)
        timestep = direct(timestep, action)
        assert float(reward) == float(timestep.reward)
        assert bool(terminated) == bool(timestep.is_termination()) and bool(truncated) == bool(timestep.is_truncation())
        if bool(timestep.is_done()):
            break
        np.testing.assert_array_equal(obs, env.observe(timestep))


def test_reaching_the_goal_pays_minigrid_reward():
    env = envs.make("Navix-Empty-5x5-v0")
    _, state = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    rewards = []
    # Empty-5x5 starts top-left facing east, goal bottom-right: forward x2, turn right, forward x2
    for i, a in enumerate([2, 2, 1, 2, 2]):
        _, state, r, terminated, truncated, info = step(jax.random.key(i), state, jnp.int32(a))
        rewards.append(float(r))
    assert bool(terminated) and not bool(truncated) and rewards[-1] == pytest.approx(1 - 0.9 * 5 / 100)
    assert bool(info.returned_episode) and int(info.returned_episode_length) == 5
    assert float(info.returned_episode_return) == pytest.approx(sum(rewards))
    assert int(state.episode_length) == 0 and float(state.episode_return) == 0.0


def test_gymnax_resets_in_the_same_step():
    env = envs.make("CartPole-v1", max_steps=10)
    assert isinstance(env, envs.GymnaxEnv) and (env.num_actions, env.obs_size, env.max_steps) == (2, 4, 10)
    params = env.default_params
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(0), 3), params)
    assert obs.shape == (3, 4) and obs.dtype == jnp.float32

    def rollout(state, key):
        _, state, reward, terminated, truncated, info = vstep(env)(
            jax.random.split(key, 3), state, jnp.zeros(3, jnp.int32), params
        )
        return state, (terminated | truncated, info.returned_episode_length, state.episode_length, reward)

    keys = jax.random.split(jax.random.key(1), 25)
    _, (done, lengths, running, reward) = jax.jit(lambda s: jax.lax.scan(rollout, s, keys))(state)
    done, lengths, running = map(np.asarray, (done, lengths, running))
    assert done.any() and (running[done] == 0).all() and (lengths[done] <= 10).all()
    assert float(np.asarray(reward).min()) == 1.0


def test_gymnax_params_are_traced():
    """``params`` is data, not configuration: a new horizon through params compiles nothing new."""
    env = envs.make("CartPole-v1")
    params = env.default_params
    step = jax.jit(env.step)
    _, state = env.reset(jax.random.key(0), params)
    step(jax.random.key(1), state, jnp.int32(0), params)
    with count_compilations() as counter:
        out = step(jax.random.key(1), state, jnp.int32(0), params.replace(max_steps_in_episode=1))
    assert counter.compiles == 0 and bool(out[4])  # truncated at the new horizon
