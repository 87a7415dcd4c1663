"""The ``marl`` template's IPPO / MAPPO kernel: IPPO with PPO clip learns MPE simple_spread, the mirror-learning
clip is PPO's clipped objective, a second call compiles nothing, and MAPPO's critic sees the world state.

A MAPPO training run is not in the suite (its compile alone costs 35-80 s on 2 cores); the transfer study
(``benchmarks/marl_transfer.py spread_mappo``) trains it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels.ppo import ppo_clip_drift
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.templates.marl import ippo

CLIP = ppo_clip_drift(0.2)
# the template's training setting at a test budget (the template's settings use these hyperparameters)
SPREAD = ippo.MARLConfig(env_name="MPE_simple_spread_v3", total_timesteps=65_536)
SEEDS = [0, 1]
MARGIN = 2.0  # per-agent return; random is about -27.7 on simple_spread, a converged IPPO about -18 (JaxMARL)


@pytest.fixture(scope="module")
def spread():
    return ippo.train_seeds(SPREAD, CLIP, SEEDS)


@pytest.mark.slow
def test_ippo_with_ppo_clip_learns_simple_spread_with_a_margin_over_random(spread):
    random_return = ippo.random_return(SPREAD)
    final = ippo.mean_over_last(spread)
    first = spread["return_sum"][:, :3].sum(-1) / spread["episodes"][:, :3].sum(-1)
    assert np.all(final > random_return + MARGIN), (final, random_return)
    assert np.all(final > first + MARGIN), (final, first)
    # every episode counted once: JaxMARL's MPE ends an episode when the step counter, checked before it is
    # incremented, reaches max_steps = 25, so an episode lasts 26 steps; every episode started in training counts,
    # the last one finished after it (the curve's estimator)
    assert np.all(spread["episodes"].sum(-1) == SPREAD.num_envs * -(-SPREAD.num_updates * SPREAD.num_steps // 26))


@pytest.mark.slow
def test_second_call_compiles_nothing_and_repeats_exactly(spread):
    with count_compilations() as counter:
        again = ippo.train_seeds(SPREAD, CLIP, SEEDS)
    assert counter.compiles == 0
    for k in spread:
        np.testing.assert_array_equal(spread[k], again[k])
    assert not np.allclose(spread["policy_loss"][0], spread["policy_loss"][1])  # seeds differ


def test_mirror_learning_clip_is_exactly_the_clipped_objective_with_its_gradient():
    key_r, key_a = jax.random.split(jax.random.key(1))
    log_r = 0.3 * jax.random.normal(key_r, (4096,))
    adv = jax.random.normal(key_a, (4096,))
    mirror = lambda lr: ippo.mirror_objective(jnp.exp(lr), adv, CLIP, jnp.float32(0.5))
    clipped = lambda lr: jnp.minimum(jnp.exp(lr) * adv, jnp.clip(jnp.exp(lr), 0.8, 1.2) * adv)
    np.testing.assert_allclose(mirror(log_r), clipped(log_r), rtol=1e-6, atol=1e-6)
    g_mirror = jax.grad(lambda lr: mirror(lr).mean())(log_r)
    g_clipped = jax.grad(lambda lr: clipped(lr).mean())(log_r)
    np.testing.assert_allclose(g_mirror, g_clipped, rtol=1e-6, atol=1e-8)


def test_mappo_critic_sees_the_world_state_and_ippo_its_own_observation():
    spec = ippo.env_spec(SPREAD)
    assert (spec.agents, spec.obs_size, spec.num_actions) == (("agent_0", "agent_1", "agent_2"), 18, 5)
    for critic, size in (("local", 18), ("world", 3 * 18 + 3)):
        config = ippo.MARLConfig(critic=critic, num_envs=2)
        params = ippo.make_init(config)(jax.random.key(0))["params"]
        assert params["Dense_3"]["kernel"].shape == (size, config.hidden)  # the critic's first layer
        assert params["Dense_0"]["kernel"].shape == (18, config.hidden)  # the actor sees its own observation
        env = ippo.make_env(config.env_name)
        _, _, observe = ippo._glue(config, spec, env)
        obs, state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 2))
        own, critic_in, avail = jax.jit(observe)(obs, state)
        assert own.shape == (6, 18) and critic_in.shape == (6, size) and bool(avail.all())
        np.testing.assert_array_equal(own[2:4], obs["agent_1"])  # actor i: agent i // envs, environment i % envs
        if critic == "world":
            world = np.concatenate([obs[a] for a in spec.agents], -1)
            np.testing.assert_array_equal(critic_in[2:4, :54], world)
            np.testing.assert_array_equal(critic_in[2:4, 54:], np.tile([0.0, 1.0, 0.0], (2, 1)))


def test_rendered_symbolic_drifts_share_one_interpreted_program_and_match_the_native_kernel():
    """A rendered drift runs through the interpreter (one compile for every formula of one program length); on the
    same seeds it trains as the same drift compiled natively does (up to float summation order)."""
    from jaxlib_kernels import interpreter
    from jaxlib_kernels.templates import make

    template = make("marl")
    tiny = ippo.MARLConfig(env_name="MPE_simple_spread_v3", total_timesteps=2048)
    clip = template.load(template.baseline("ppo_clip").source)
    assert interpreter.expression_of(clip) is not None
    interpreted = ippo.train_seeds(tiny, clip, SEEDS)
    native = ippo.train_seeds(tiny, CLIP, SEEDS)
    np.testing.assert_allclose(interpreted["return_sum"], native["return_sum"], rtol=1e-3, atol=1e-3)
    other = ["mul", 0.5, ["sq", ["sub", "r", 1.0]]]  # a quadratic drift, in the same length bucket as the clip
    assert interpreter.length_of(other) == interpreter.length_of(interpreter.expression_of(clip))
    with count_compilations() as counter:
        ippo.train_seeds(tiny, interpreter.with_expression(other), SEEDS)
    assert counter.compiles == 0  # another formula, the same compiled program


def test_forward_is_the_actor_critics_apply():
    """``ippo.forward`` (the network written out on its parameters) is the flax module's ``apply`` on them."""
    from jaxlib_kernels.ppo import ActorCritic

    for critic in ("local", "world"):
        config = ippo.MARLConfig(critic=critic, num_envs=2)
        spec = ippo.env_spec(config)
        params = ippo.make_init(config)(jax.random.key(3))
        x = jax.random.normal(jax.random.key(4), (7, spec.obs_size))
        critic_in = None if critic == "local" else jax.random.normal(jax.random.key(5), (7, spec.world_size + 3))
        logits, value = ippo.forward(params, x, critic_in)
        logits_ref, value_ref = ActorCritic(spec.num_actions, config.hidden).apply(params, x, critic_in)
        np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(value, value_ref, rtol=1e-5, atol=1e-5)


def test_overcooked_setting_runs_with_finite_returns_of_the_right_shape_and_repeats():
    """The held-out Overcooked setting (cramped_room, shaped reward annealed, sparse return counted) at a tiny
    budget: 4 updates of 16 environments x 128 steps, so each environment ends its first 400-step episode."""
    from jaxlib_kernels.templates import make

    template = make("marl")
    setting = template.settings["overcooked"]
    config = template.kernel_config(setting, 8192)
    assert (config.env_name, config.reward_shaping, config.num_updates) == ("overcooked", 0.5, 4)
    spec = ippo.env_spec(config)
    assert (spec.agents, spec.obs_size, spec.num_actions) == (("agent_0", "agent_1"), 4 * 5 * 26, 6)
    out = template.evaluate(setting, 8192, CLIP, SEEDS)
    assert out["curve"].shape == (2, 4) and out["final"].shape == (2,) and out["x"].shape == (4,)
    assert np.all(np.isfinite(out["final"])) and np.all(out["final"] >= 0)  # 20 per soup delivered, never negative
    # every episode started counts, in the update it started in: one per environment in update 1, and one in update
    # 4 (at step 400), finished after training
    np.testing.assert_array_equal(out["episodes"], [[16, 0, 0, 16], [16, 0, 0, 16]])
    assert np.all(np.isnan(out["win_rate"]))
    again = template.evaluate(setting, 8192, CLIP, SEEDS)
    for k in ("curve", "final", "episodes", "drift"):
        np.testing.assert_array_equal(out[k], again[k])


@pytest.mark.parametrize("name, kwargs, horizon", [
    ("MPE_simple_spread_v3", (), 26), ("MPE_simple_reference_v3", (), 26),
    ("overcooked", (("layout", "cramped_room"), ("max_steps", 12)), 12), ("SMAX-3m", (), None)])
def test_the_fixed_horizon_step_resets_only_at_episode_ends_and_equals_jaxmarls_auto_reset(name, kwargs, horizon):
    """batched_step with the environment's fixed horizon (reset only on the step every episode of the batch ends)
    gives what vmap(env.step) gives (a reset on every step, selected where done), over two episodes and under vmap
    over seeds with the step counter unbatched: the same episode ends, and the same observations and rewards up
    to float rounding (the two programs are fused differently by XLA: differences of one float32 ulp, before the
    first reset too); SMAX (episodes end on a win or a loss) keeps JaxMARL's step."""
    env = ippo.make_env(name, kwargs)
    assert ippo.fixed_horizon(env) == horizon
    if horizon is None:
        return
    n_envs, steps = 3, 2 * horizon + 3
    lazy, eager = ippo.batched_step(env, horizon), ippo.batched_step(env, None)

    def rollout(step, key):
        obs, state = jax.vmap(env.reset)(jax.random.split(key, n_envs))

        def body(carry, t):
            obs, state, key = carry
            key, act_key, step_key = jax.random.split(key, 3)
            actions = {a: jax.random.randint(jax.random.fold_in(act_key, i), (n_envs,), 0, env.action_space(a).n)
                       for i, a in enumerate(env.agents)}
            obs, state, reward, done, _ = step(jax.random.split(step_key, n_envs), state, actions, t)
            return (obs, state, key), (obs, reward, done["__all__"])

        return jax.lax.scan(body, (obs, state, key), jnp.arange(steps))[1]

    keys = jax.random.split(jax.random.key(3), 2)
    got = jax.jit(jax.vmap(lambda k: rollout(lazy, k)))(keys)
    want = jax.jit(jax.vmap(lambda k: rollout(eager, k)))(keys)
    ended = np.asarray(want[2])
    assert ended.sum(-1).tolist() == [[0] * (horizon - 1) + [n_envs] + [0] * (horizon - 1) + [n_envs, 0, 0, 0]] * 2
    np.testing.assert_array_equal(np.asarray(got[2]), ended)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
