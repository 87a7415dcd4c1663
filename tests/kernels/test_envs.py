import jax
import jax.numpy as jnp
import navix as nx
import numpy as np
import pytest

from jaxlib_kernels import envs

IDS = ["Navix-Empty-5x5-v0", "Navix-Empty-Random-6x6-v0", "Navix-DoorKey-5x5-v0", "Navix-FourRooms-v0"]


def test_registry_reaches_every_navix_id():
    assert set(envs.ENVS) == set(nx.registry())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError) as err:
        envs.make("Navix-Empty-5x6-v0")
    assert "did you mean" in str(err.value) and "Navix-Empty-5x5-v0" in str(err.value)


def test_minigrid_horizons():
    assert envs.make("Navix-Empty-8x8-v0").max_steps == 256
    assert envs.make("Navix-DoorKey-5x5-v0").max_steps == 250
    assert envs.make("Navix-Empty-5x5-v0", max_steps=17).max_steps == 17


@pytest.mark.parametrize("name", IDS)
def test_step_jits_vmaps_and_resets_in_the_same_step(name):
    env = envs.make(name, max_steps=12)
    keys = jax.random.split(jax.random.key(0), 4)
    state, obs = jax.vmap(env.reset)(keys)
    assert obs.shape == (4, env.obs_size) and obs.dtype == jnp.float32

    def rollout(state, _):
        state, obs, reward, done, info = jax.vmap(env.step)(state, jnp.zeros(4, jnp.int32))
        return state, (done, info.returned_episode_length, state.episode_length)

    _, (done, lengths, running) = jax.jit(lambda s: jax.lax.scan(rollout, s, None, 30))(state)
    done, lengths, running = map(np.asarray, (done, lengths, running))
    # turning left forever never reaches the goal: every episode is truncated at exactly max_steps,
    # and the state right after is already a fresh episode (no wasted step)
    assert done.sum(0).tolist() == [2, 2, 2, 2]
    assert set(lengths[done].tolist()) == {12}
    assert (running[done] == 0).all()


def test_reaching_the_goal_pays_minigrid_reward():
    env = envs.make("Navix-Empty-5x5-v0")
    state, _ = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    rewards = []
    # Empty-5x5 starts top-left facing east, goal bottom-right: forward x2, turn right, forward x2
    for a in [2, 2, 1, 2, 2]:
        state, _, r, d, info = step(state, jnp.int32(a))
        rewards.append(float(r))
    assert bool(d) and rewards[-1] == pytest.approx(1 - 0.9 * 5 / 100)


def test_gymnax_ids_share_the_interface_and_reset_in_the_same_step():
    env = envs.make("CartPole-v1", max_steps=10)
    assert isinstance(env, envs.GymnaxEnv) and (env.num_actions, env.obs_size, env.max_steps) == (2, 4, 10)
    state, obs = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 3))
    assert obs.shape == (3, 4) and obs.dtype == jnp.float32

    def rollout(state, _):
        state, _, reward, done, info = jax.vmap(env.step)(state, jnp.zeros(3, jnp.int32))
        return state, (done, info.returned_episode_length, state.episode_length, reward)

    _, (done, lengths, running, reward) = jax.jit(lambda s: jax.lax.scan(rollout, s, None, 25))(state)
    done, lengths, running = map(np.asarray, (done, lengths, running))
    assert done.any() and (running[done] == 0).all() and (lengths[done] <= 10).all()
    assert float(np.asarray(reward).min()) == 1.0


def test_gymnax_and_navix_names_do_not_collide():
    assert not set(envs.GYMNAX_ENVS) & set(envs.ENVS)
    with pytest.raises(KeyError):
        envs.make("CartPole-v2")
