"""IPPO and MAPPO as mirror learning on JaxMARL environments, in the purejaxrl / JaxMARL-baselines shape.

Sources: de Witt et al., 2020, "Is Independent Learning All You Need in the StarCraft Multi-Agent Challenge?"
(IPPO); Yu et al., 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games" (MAPPO);
Rutherford et al., 2024, "JaxMARL"; Lu et al., 2022, "Discovered Policy Optimisation" (the drift).

One network is shared by every agent (parameter sharing, as in JaxMARL's baselines): the agents of all parallel
environments form one batch of ``num_agents * num_envs`` actors. The policy loss is the mirror-learning form
``L = -E[r A - D(r, A, n/N)]`` with a pluggable drift ``D`` (:func:`jaxlib_kernels.ppo.ppo_clip_drift` gives
exactly PPO's clipped objective). ``critic="local"`` is IPPO (the critic sees the agent's own observation);
``critic="world"`` is MAPPO (a centralised critic on the world state: the environment's ``world_state`` where it
has one, as SMAX, else every agent's observation concatenated, as JaxMARL's MPE world-state wrapper; both with
the agent's one-hot id). SMAX's unavailable actions are masked out of the policy.

Overcooked (``env_name="overcooked"``, ``env_kwargs`` naming a layout of JaxMARL's ``overcooked_layouts``): the
26-channel image observation is flattened into the shared MLP; with ``reward_shaping`` > 0 the agents are trained
on the sparse reward plus the environment's shaped reward annealed linearly from 1 to 0 over that fraction of
training (JaxMARL's ``REW_SHAPING_HORIZON`` / ``TOTAL_TIMESTEPS``, 0.5 in ``ippo_ff_overcooked.yaml``), while the
returns counted are the sparse ones (soups delivered, 20 each), as JaxMARL logs them.

Speed (``benchmarks/marl.py``): the critic's input and the action mask are carried through the rollout and stored
only where they carry information (MAPPO's world state, SMAX's available actions), the drift is evaluated once per
minibatch. The two towers run as separate products (:func:`forward`): fusing them (concatenated first-layer
kernels, a batched second layer) measured no faster at 1 seed and 7% slower at 8 seeds under ``vmap``, where XLA
transposes the stacked activations between the seed and the tower axes (``benchmarks/README.md``, marl).

``make_train(config, drift)`` returns ``train(key, params) -> {"state", "metrics"}`` for one seed: the whole
training loop is one ``lax.scan``; :func:`train_seeds` compiles ``jit(vmap(train))`` once per (configuration,
drift, number of seeds). Returns are per agent and episode (the mean over agents of each agent's undiscounted
episode return), SMAX wins per episode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlib_kernels import devices, interpreter, ppo
from jaxlib_kernels.interpreter import Program
from jaxlib_kernels.ppo import ActorCritic, Drift, categorical_entropy, categorical_log_prob, ppo_clip_drift, seed_keys

SMAX_PREFIX = "SMAX-"  # "SMAX-3m": JaxMARL's HeuristicEnemySMAX on that scenario
OVERCOOKED = "overcooked"  # env_kwargs (("layout", "<name of jaxmarl's overcooked_layouts>"),)


@dataclasses.dataclass(frozen=True)
class MARLConfig:
    """Static IPPO / MAPPO settings; derived sizes are properties.

    The defaults are JaxMARL's ``ippo_ff_mpe.yaml`` (16 environments, 128 steps, 4 epochs of 4 minibatches,
    gamma 0.99, lambda 0.95, entropy 0.01, value 0.5, gradient norm 0.5, annealed learning rate) except the
    learning rate (1e-3 instead of 2.5e-4, for budgets of 1e5 steps instead of 1e7) and no value clipping: on
    simple_spread at 2e5 steps, 2 seeds, final per-agent return -23.2 / -22.3 with these, -23.1 / -23.9 at
    lr 2.5e-3, -21.0 / -24.7 at lr 2.5e-3 with value clipping 0.2 (random policy -27.7).

    ``total_timesteps`` counts joint environment steps (one step of every agent of one environment), as JaxMARL.
    """

    env_name: str = "MPE_simple_spread_v3"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    critic: str = "local"
    total_timesteps: int = 200_000
    num_envs: int = 16
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    value_clip: float | None = None  # PPO's value clipping of JaxMARL's baselines is 0.2; None: a plain squared error
    lr: float = 1e-3
    anneal_lr: bool = True
    hidden: int = 64
    reward_shaping: float = 0.0  # Overcooked: anneal the shaped reward 1 -> 0 over this fraction of training; 0: off

    def __post_init__(self):
        if self.critic not in ("local", "world"):
            raise ValueError(f"critic must be 'local' (IPPO) or 'world' (MAPPO), got {self.critic!r}")
        if not 0.0 <= self.reward_shaping <= 1.0:
            raise ValueError(f"reward_shaping is a fraction of training in [0, 1], got {self.reward_shaping!r}")

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // (self.num_envs * self.num_steps))

    @property
    def env_steps(self) -> int:
        """Joint environment steps actually taken (a whole number of rollouts)."""
        return self.num_updates * self.num_envs * self.num_steps

    @property
    def smax(self) -> bool:
        return self.env_name.startswith(SMAX_PREFIX)


@functools.lru_cache(maxsize=32)
def make_env(env_name: str, env_kwargs: tuple[tuple[str, Any], ...] = ()):
    """The JaxMARL environment of a name (``SMAX-<map>``: the heuristic-enemy SMAX on that map)."""
    import jaxmarl

    if env_name.startswith(SMAX_PREFIX):
        from jaxmarl.environments.smax import map_name_to_scenario

        return jaxmarl.make("HeuristicEnemySMAX", scenario=map_name_to_scenario(env_name[len(SMAX_PREFIX):]),
                            **dict(env_kwargs))
    kwargs = dict(env_kwargs)
    if env_name == OVERCOOKED:  # the layout by name, so that a configuration stays hashable and readable
        import warnings

        from jaxmarl.environments.overcooked import overcooked_layouts

        kwargs["layout"] = overcooked_layouts[kwargs.get("layout", "cramped_room")]
        with warnings.catch_warnings():  # "OvercookedV2 is now released": the original is the one JaxMARL's IPPO uses
            warnings.simplefilter("ignore", DeprecationWarning)
            return jaxmarl.make(env_name, **kwargs)
    return jaxmarl.make(env_name, **kwargs)


class Spec(NamedTuple):
    """Sizes of an environment as the shared network sees it."""

    agents: tuple[str, ...]
    obs_size: int
    num_actions: int
    world_size: int  # the critic's input size under critic="world" (without the agent id)
    has_world_state: bool


def env_spec(config: MARLConfig) -> Spec:
    env = make_env(config.env_name, config.env_kwargs)
    agents = tuple(env.agents)
    obs_sizes = {int(np.prod(env.observation_space(a).shape)) for a in agents}
    actions = {int(env.action_space(a).n) for a in agents}
    if len(obs_sizes) != 1 or len(actions) != 1:
        raise ValueError(f"{config.env_name}: parameter sharing needs equal observation and action sizes per agent, "
                         f"got {sorted(obs_sizes)} and {sorted(actions)}")
    obs, _ = jax.eval_shape(env.reset, jax.random.key(0))
    has_world = "world_state" in obs
    obs_size = obs_sizes.pop()
    world = int(np.prod(obs["world_state"].shape)) if has_world else obs_size * len(agents)
    return Spec(agents, obs_size, actions.pop(), world, has_world)


class Transition(NamedTuple):
    done: jax.Array  # (actors,) per-agent done: cuts the bootstrap
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    critic_in: jax.Array
    avail: jax.Array


class Runner(NamedTuple):
    params: dict
    opt_state: optax.OptState
    env_state: Any
    obs: jax.Array  # (actors, obs)
    critic_in: jax.Array  # (actors, critic)
    avail: jax.Array  # (actors, actions) bool
    episode_return: jax.Array  # (envs, agents)
    key: jax.Array
    update: jax.Array
    tally: ppo.Tally  # the curve's bookkeeping: episodes credited to the update they started in (return, wins)


def _critic_size(config: MARLConfig, spec: Spec) -> int:
    return spec.obs_size if config.critic == "local" else spec.world_size + len(spec.agents)


def make_init(config: MARLConfig) -> Callable[[jax.Array], dict]:
    """``init(key) -> params`` for one seed; called outside ``vmap`` as in :mod:`jaxlib_kernels.ppo`."""
    spec = env_spec(config)
    network = ActorCritic(spec.num_actions, config.hidden)

    def init(key: jax.Array) -> dict:
        return network.init(key, jnp.zeros((spec.obs_size,)), jnp.zeros((_critic_size(config, spec),)))

    return init


@functools.lru_cache(maxsize=32)
def _jitted_init(config: MARLConfig) -> Callable:
    return jax.jit(make_init(config))


def init_params(config: MARLConfig, keys: jax.Array) -> dict:
    init = _jitted_init(config)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])


def _glue(config: MARLConfig, spec: Spec, env):
    """Functions between JaxMARL's per-agent dicts over ``num_envs`` environments and the actor batch."""
    n_agents, n_envs = len(spec.agents), config.num_envs
    agent_id = jnp.repeat(jnp.eye(n_agents), n_envs, axis=0)  # actor i = agent i // n_envs, environment i % n_envs

    def stack(d: dict) -> jax.Array:  # {agent: (envs, ...)} -> (agents * envs, ...)
        x = jnp.stack([d[a] for a in spec.agents])
        return x.reshape((n_agents * n_envs,) + x.shape[2:])

    def unstack(x: jax.Array) -> dict:
        x = x.reshape((n_agents, n_envs) + x.shape[1:])
        return {a: x[i] for i, a in enumerate(spec.agents)}

    def observe(obs: dict, env_state) -> tuple[jax.Array, jax.Array, jax.Array]:
        own = stack({a: obs[a].reshape(n_envs, -1) for a in spec.agents}).astype(jnp.float32)
        if config.critic == "local":
            critic_in = own
        else:
            if spec.has_world_state:
                world = obs["world_state"].reshape(n_envs, -1)
            else:
                world = jnp.concatenate([obs[a].reshape(n_envs, -1) for a in spec.agents], axis=-1)
            critic_in = jnp.concatenate([jnp.tile(world, (n_agents, 1)).astype(jnp.float32), agent_id], axis=-1)
        if config.smax:
            avail = stack(jax.vmap(env.get_avail_actions)(env_state)).astype(bool)
        else:
            avail = jnp.ones((n_agents * n_envs, spec.num_actions), bool)
        return own, critic_in, avail

    return stack, unstack, observe


def fixed_horizon(env) -> int | None:
    """The episode length of an environment whose every episode has the same length (JaxMARL's MPE and Overcooked
    end only on their step limit) and which steps with JaxMARL's generic auto-reset; ``None`` otherwise (SMAX ends
    an episode on a win or a loss). MPE tests its limit before it counts the step, so its episodes last
    ``max_steps + 1`` steps; Overcooked counts first (``max_steps``). ``tests/kernels/test_marl.py`` holds both
    to jaxmarl's own auto-reset."""
    from jaxmarl.environments.mpe.simple import SimpleMPE
    from jaxmarl.environments.multi_agent_env import MultiAgentEnv
    from jaxmarl.environments.overcooked.overcooked import Overcooked

    if type(env).step is not MultiAgentEnv.step:
        return None
    if isinstance(env, SimpleMPE):
        return int(env.max_steps) + 1
    if isinstance(env, Overcooked):
        return int(env.max_steps)
    return None


def batched_step(env, horizon: int | None) -> Callable:
    """``step(keys, state, actions, t) -> (obs, state, reward, done, info)`` over a batch of environments, ``t``
    the joint step's index since the batch was reset together (an unbatched counter).

    JaxMARL's ``MultiAgentEnv.step`` resets every environment on every step and keeps the reset where the episode
    ended (``lax.select``): a full ``reset``, observations included, per step. With a fixed ``horizon`` every
    environment of the batch ends its episode on the same step, so the reset is computed only on those steps, under
    a ``lax.cond`` on ``t`` (not batched, so it stays a branch under ``vmap`` over seeds and candidates); the keys
    are split as ``MultiAgentEnv.step`` splits them, so the episodes, observations and rewards are JaxMARL's up to
    float rounding (XLA fuses the two programs differently: one float32 ulp here and there;
    ``tests/kernels/test_marl.py``). ``horizon=None``: ``vmap(env.step)``."""
    vstep = jax.vmap(env.step)
    if horizon is None:
        return lambda keys, state, actions, t: vstep(keys, state, actions)
    step_env, reset = jax.vmap(env.step_env), jax.vmap(env.reset)

    def step(keys, state, actions, t):
        keys = jax.vmap(jax.random.split)(keys)  # MultiAgentEnv.step: key, key_reset = split(key)
        obs, state, reward, done, info = step_env(keys[:, 0], state, actions)

        def restart(stepped):
            fresh = reset(keys[:, 1])
            ended = done["__all__"]
            pick = lambda a, b: jnp.where(ended.reshape(ended.shape + (1,) * (a.ndim - 1)), a, b)
            return jax.tree_util.tree_map(pick, fresh, stepped)

        obs, state = jax.lax.cond((t + 1) % horizon == 0, restart, lambda stepped: stepped, (obs, state))
        return obs, state, reward, done, info

    return step


def _masked(logits: jax.Array, avail: jax.Array | None) -> jax.Array:
    """Unavailable actions out of the policy; ``avail=None``: every action available (no mask)."""
    return logits if avail is None else jnp.where(avail, logits, -1e9)


def forward(params: dict, x: jax.Array, critic_in: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``ActorCritic(num_actions, hidden).apply(params, x, critic_in)`` written out on its parameters: one product
    per layer and tower, the critic on ``x`` where ``critic_in`` is None (IPPO). Not fused across the towers: under
    ``vmap`` over seeds the fused form cost XLA transposes and ran 7% slower at 8 seeds, no faster at 1
    (``benchmarks/README.md``, marl). Equal to the flax module's ``apply`` (``tests/kernels/test_marl.py``)."""
    p = params["params"]
    dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]
    a = jnp.tanh(dense("Dense_1", jnp.tanh(dense("Dense_0", x))))
    v = jnp.tanh(dense("Dense_4", jnp.tanh(dense("Dense_3", x if critic_in is None else critic_in))))
    return dense("Dense_2", a), dense("Dense_5", v)[..., 0]


def mirror_objective(ratio: jax.Array, advantage: jax.Array, drift: Drift, progress: jax.Array) -> jax.Array:
    """The per-sample mirror-learning objective ``r A - D(r, A, n/N)`` (the policy loss is its negated mean)."""
    return ratio * advantage - drift(ratio, advantage, progress)


def make_train(config: MARLConfig, drift: Drift | None = None) -> Callable[[jax.Array, dict], dict]:
    """Build ``train(key, params) -> {"state": params, "metrics": per-update arrays}`` for one seed."""
    body = _train_body(config)
    drift = drift or ppo_clip_drift()
    return lambda key, params: body(key, params, drift)


def make_interpreted_train(config: MARLConfig) -> Callable[[jax.Array, dict, Program], dict]:
    """``train(key, params, program)`` whose drift is an interpreted expression (``jaxlib_kernels.interpreter``):
    the program is an argument, so one compiled ``jit(vmap(train))`` runs every formula of one program length."""
    body = _train_body(config)
    return lambda key, params, program: body(key, params, interpreter.drift_of(program))


def make_hparam_train(config: MARLConfig) -> Callable[[jax.Array, dict, Program, dict], dict]:
    """``train(key, params, program, hparams)``: :func:`make_interpreted_train` with ``ppo.TRACED`` (lr, ent_coef,
    update_epochs) as traced arguments instead of the configuration's, as ``ppo.make_hparam_train``."""
    body = _train_body(config)
    return lambda key, params, program, hparams: body(key, params, interpreter.drift_of(program), hparams)


def _train_body(config: MARLConfig) -> Callable[..., dict]:
    """``train(key, params, drift, hparams=None)`` for one seed; ``drift`` is a Python callable applied inside the
    trace, ``hparams`` the configuration's (None) or traced ones, as in ``ppo._train_body``."""
    env = make_env(config.env_name, config.env_kwargs)
    spec = env_spec(config)
    n_agents, n_envs = len(spec.agents), config.num_envs
    n_actors = n_agents * n_envs
    batch = n_actors * config.num_steps
    stack, unstack, observe_all = _glue(config, spec, env)
    world_critic, masked = config.critic == "world", config.smax
    shaping_steps = config.reward_shaping * config.env_steps  # joint env steps over which the shaping anneals to 0

    def observe(obs, env_state):
        # carried and stored only where they carry information: IPPO's critic reads the policy's input (None: the
        # network's default) and without SMAX every action is available (None: no mask); XLA drops the rest
        own, critic_in, avail = observe_all(obs, env_state)
        return own, critic_in if world_critic else None, avail if masked else None

    reset = jax.vmap(env.reset)
    step = batched_step(env, fixed_horizon(env))

    def train(key: jax.Array, params: dict, drift: Drift, hparams: dict | None = None) -> dict:
        tx, ent_coef = ppo.optimizer_of(config, hparams)
        key, reset_key = jax.random.split(key)
        obs, env_state = reset(jax.random.split(reset_key, n_envs))
        own, critic_in, avail = observe(obs, env_state)
        runner = Runner(params, tx.init(params), env_state, own, critic_in, avail,
                        jnp.zeros((n_envs, n_agents)), key, jnp.zeros((), jnp.int32),
                        ppo.tally_init(n_envs, config.num_updates, 2))

        def env_step(runner: Runner, i):
            key, action_key, step_key = jax.random.split(runner.key, 3)
            logits, value = forward(runner.params, runner.obs, runner.critic_in)
            logits = _masked(logits, runner.avail)
            action = jax.random.categorical(action_key, logits)
            log_prob = categorical_log_prob(logits, action)
            obs, env_state, reward, done, info = step(jax.random.split(step_key, n_envs), runner.env_state,
                                                      unstack(action), runner.update * config.num_steps + i)
            reward_actors = stack(reward).astype(jnp.float32)
            if shaping_steps > 0:  # JaxMARL's Overcooked IPPO: + shaped reward x linear anneal, per update
                timestep = (runner.update * (n_envs * config.num_steps)).astype(jnp.float32)
                anneal = jnp.clip(1.0 - timestep / shaping_steps, 0.0, 1.0)
                reward_actors = reward_actors + anneal * stack(info["shaped_reward"]).astype(jnp.float32)
            done_actors = stack({a: done[a] for a in spec.agents}).astype(jnp.float32)
            episode_done = done["__all__"]
            episode_return = runner.episode_return + jnp.stack([reward[a] for a in spec.agents], axis=-1)
            finished = episode_return.mean(-1) * episode_done  # mean over agents of each agent's return
            if config.smax:  # SMAX pays 1 to every agent on a win
                won = jnp.any(jnp.stack([reward[a] for a in spec.agents], -1) >= 1.0, axis=-1) & episode_done
            else:
                won = jnp.zeros_like(episode_done)
            own, critic_in, avail = observe(obs, env_state)
            transition = Transition(done_actors, action, value, reward_actors, log_prob, runner.obs,
                                    runner.critic_in, runner.avail)
            tally = ppo.tally_step(runner.tally, episode_done.astype(bool),
                                   jnp.stack([finished, won.astype(jnp.float32)], -1), runner.update)
            runner = runner._replace(env_state=env_state, obs=own, critic_in=critic_in, avail=avail, key=key,
                                     episode_return=episode_return * (1.0 - episode_done[:, None]), tally=tally)
            return runner, transition

        def gae(traj: Transition, last_value: jax.Array) -> tuple[jax.Array, jax.Array]:
            def backward(carry, t: Transition):
                next_adv, next_value = carry
                nonterminal = 1.0 - t.done
                delta = t.reward + config.gamma * next_value * nonterminal - t.value
                adv = delta + config.gamma * config.gae_lambda * nonterminal * next_adv
                return (adv, t.value), adv

            _, advantages = jax.lax.scan(backward, (jnp.zeros_like(last_value), last_value), traj, reverse=True,
                                         unroll=16)
            return advantages, advantages + traj.value

        def loss_fn(params, minibatch, progress):
            traj, advantages, targets = minibatch
            logits, value = forward(params, traj.obs, traj.critic_in)
            logits = _masked(logits, traj.avail)
            log_prob = categorical_log_prob(logits, traj.action)
            if config.value_clip is None:
                value_loss = 0.5 * ((value - targets) ** 2).mean()
            else:
                value_clipped = traj.value + jnp.clip(value - traj.value, -config.value_clip, config.value_clip)
                value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (value_clipped - targets) ** 2).mean()
            adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = jnp.exp(log_prob - traj.log_prob)
            drift_value = drift(ratio, adv, progress)  # evaluated once: the objective and the metric share it
            policy_loss = -(ratio * adv - drift_value).mean()  # = -mirror_objective(ratio, adv, drift, progress)
            entropy = categorical_entropy(logits).mean()
            total = policy_loss + config.vf_coef * value_loss - ent_coef * entropy
            return total, (policy_loss, value_loss, entropy, drift_value.mean())

        def update_step(runner: Runner, _):
            runner, traj = jax.lax.scan(env_step, runner, jnp.arange(config.num_steps))
            _, last_value = forward(runner.params, runner.obs, runner.critic_in)
            advantages, targets = gae(traj, last_value)
            progress = runner.update.astype(jnp.float32) / config.num_updates

            def epoch(carry, _):
                params, opt_state, key = carry
                key, perm_key = jax.random.split(key)
                perm = jax.random.permutation(perm_key, batch)
                flat = jax.tree_util.tree_map(lambda x: x.reshape((batch,) + x.shape[2:]),
                                              (traj, advantages, targets))
                minibatches = jax.tree_util.tree_map(
                    lambda x: jnp.take(x, perm, axis=0).reshape((config.num_minibatches, -1) + x.shape[1:]), flat
                )

                def minibatch(carry, mb):
                    params, opt_state = carry
                    grads, aux = jax.grad(loss_fn, has_aux=True)(params, mb, progress)
                    updates, opt_state = tx.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), aux

                (params, opt_state), aux = jax.lax.scan(minibatch, (params, opt_state), minibatches)
                return (params, opt_state, key), aux

            (params, opt_state, key), means = ppo.run_epochs(
                epoch, (runner.params, runner.opt_state, runner.key), config, hparams)
            metrics = {"policy_loss": means[0], "value_loss": means[1], "entropy": means[2], "drift": means[3]}
            runner = runner._replace(params=params, opt_state=opt_state, key=key, update=runner.update + 1)
            return runner, metrics

        runner, metrics = jax.lax.scan(update_step, runner, None, config.num_updates)
        # the curve (ppo's estimator): the running episodes finish with the final policy (at most max_steps + 1)
        runner, _ = jax.lax.scan(env_step, runner, jnp.arange(env.max_steps + 1))  # t goes on from the last update
        sums = runner.tally.sums
        metrics = {**metrics, "episodes": runner.tally.episodes, "return_sum": sums[:, 0], "wins": sums[:, 1]}
        return {"state": runner.params, "metrics": metrics}

    return train


@functools.lru_cache(maxsize=64)
def _population_train(config: MARLConfig, drift: Drift | None, size: int) -> Callable:
    """The compiled ``train`` of one (configuration, drift, population size): a second call compiles nothing."""
    return devices.population_jit(make_train(config, drift), size)


@functools.lru_cache(maxsize=64)
def _interpreted_population_train(config: MARLConfig, size: int, length: int) -> Callable:
    """The compiled interpreted ``train`` of one (configuration, population size, program length)."""
    # length: part of the cache key only: a new length is a new shape
    return devices.kept_population_jit(make_interpreted_train(config), size, "ippo_interpreted", (config, size, length))


def train_seeds(config: MARLConfig, drift: Drift | None, seeds: list[int] | np.ndarray) -> dict:
    """Train one drift on several seeds in one ``jit(vmap(train))`` call; host metric arrays ``(S, updates)``.

    As in ``jaxlib_kernels.ppo.train_seeds``, a drift whose expression tree is known (a rendered symbolic
    plug-in) runs through the interpreter with ``ppo.TRACED`` as traced inputs (:func:`train_population`), so every
    such drift, whatever those hyperparameters, shares one compiled program per (configuration's other fields,
    number of seeds, program length); any other drift is its own program."""
    expr = interpreter.expression_of(drift) if drift is not None else None
    if expr is not None:
        return ppo.one_member(train_population, config, expr, seeds)
    keys, init_keys = seed_keys(seeds)
    out = _population_train(config, drift, len(seeds))(keys, init_params(config, init_keys))
    return jax.tree_util.tree_map(np.asarray, out["metrics"])


def train_programs(config: MARLConfig, programs: Program, seeds: list[int] | np.ndarray) -> dict:
    """A population of interpreted drifts (``programs``: (C, L)) on the same seeds in one compiled call; host
    arrays (C, S, ...) out, as ``ppo.train_programs`` (both stack through ``interpreter.train_population``)."""
    keys, init_keys = seed_keys(seeds)
    return interpreter.train_population(lambda size, length: _interpreted_population_train(config, size, length),
                                        programs, keys, init_params(config, init_keys))


@functools.lru_cache(maxsize=64)
def _hparam_population_train(config: MARLConfig, size: int, length: int) -> Callable:
    """The compiled ``make_hparam_train`` of one (configuration, population size, program length)."""
    return devices.kept_population_jit(make_hparam_train(config), size, "ippo_hparams", (config, size, length))


def train_population(config: MARLConfig, programs: Program, hparams: dict, seeds: list[int] | np.ndarray) -> dict:
    """:func:`train_programs` with per-candidate ``hparams`` (``{name: (C,) values}`` over ``ppo.TRACED``) in one
    compiled call, as ``ppo.train_population``; host arrays (C, S, ...)."""
    static = ppo.population_config(config)
    keys, init_keys = seed_keys(seeds)
    return interpreter.train_population(lambda size, length: _hparam_population_train(static, size, length),
                                        programs, keys, init_params(static, init_keys),
                                        per_candidate=ppo.traced_values(hparams))


def make_random_policy_eval(config: MARLConfig) -> Callable[[jax.Array], dict]:
    """Per-agent episode returns of a uniformly random (available-action) policy over the same number of steps."""
    env = make_env(config.env_name, config.env_kwargs)
    spec = env_spec(config)
    n_envs = config.num_envs
    _, unstack, observe = _glue(dataclasses.replace(config, critic="local"), spec, env)

    def run(key: jax.Array) -> dict:
        key, reset_key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(reset_key, n_envs))

        def body(carry, _):
            env_state, avail, episode_return, key = carry
            key, action_key, step_key = jax.random.split(key, 3)
            action = jax.random.categorical(action_key, _masked(jnp.zeros(avail.shape), avail))
            obs, env_state, reward, done, _ = jax.vmap(env.step)(jax.random.split(step_key, n_envs), env_state,
                                                                 unstack(action))
            episode_return = episode_return + jnp.stack([reward[a] for a in spec.agents], -1)
            finished = (episode_return.mean(-1) * done["__all__"]).sum()
            _, _, avail = observe(obs, env_state)
            episode_return = episode_return * (1.0 - done["__all__"][:, None])
            return (env_state, avail, episode_return, key), (done["__all__"].sum(), finished)

        _, _, avail = observe(obs, env_state)
        init = (env_state, avail, jnp.zeros((n_envs, len(spec.agents))), key)
        _, (episodes, return_sum) = jax.lax.scan(body, init, None, config.env_steps // n_envs)
        return {"episodes": episodes.sum(), "return_sum": return_sum.sum()}

    return run


def random_return(config: MARLConfig, seeds: int = 2) -> float:
    """Mean per-agent episode return of the random policy (a floor for tests and papers)."""
    out = jax.jit(jax.vmap(make_random_policy_eval(config)))(jax.random.split(jax.random.key(0), seeds))
    return float(np.sum(out["return_sum"]) / max(1, np.sum(out["episodes"])))


def mean_over_last(metrics: dict, key: str = "return_sum", last_fraction: float = 0.1) -> np.ndarray:
    """Episode-weighted mean of ``key`` (return_sum or wins) over the last fraction of updates
    (``ppo.final_window``), per seed."""
    episodes = np.asarray(metrics["episodes"], dtype=np.float64)
    total = np.asarray(metrics[key], dtype=np.float64)
    window = ppo.final_window(episodes, last_fraction)
    ep, tot = (episodes * window).sum(-1), (total * window).sum(-1)
    return np.where(ep > 0, tot / np.maximum(ep, 1), np.nan)
