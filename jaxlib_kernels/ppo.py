"""PPO as mirror learning, purejaxrl-style (Lu et al., 2022 "Discovered Policy Optimisation"; Kuba et al., 2022
"Mirror Learning"; Lu, purejaxrl).

The policy loss is ``L = -E[r A - D(r, A, n/N)]`` with a pluggable drift ``D``; the PPO clip drift
``relu((r - clip(r, 1-eps, 1+eps)) A)`` gives exactly PPO's clipped objective. ``make_train(config, drift)``
returns ``train(key, params) -> {"state", "metrics"}``; the caller applies ``jit(vmap(train))`` over seeds.
Initial parameters are made outside the vmap (``make_init``) because flax's orthogonal initializer inside
``jit(vmap(train))`` was seen to hang (ARCHITECTURE.md section 9).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlib_kernels import devices, envs, interpreter
from jaxlib_kernels.interpreter import Program
from jaxlib_kernels.optimisers.space import Continuous, Integer

Drift = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static PPO settings; derived sizes are properties."""

    env_name: str = "Navix-Empty-5x5-v0"
    max_steps: int | None = None
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
    lr: float = 2.5e-3
    anneal_lr: bool = True
    hidden: int = 64

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def env_steps(self) -> int:
        """Environment steps actually taken (a whole number of rollouts)."""
        return self.num_updates * self.batch_size

    def make_env(self) -> envs.Env:
        return envs.make(self.env_name, max_steps=self.max_steps)


# the hyperparameters a research tree tunes (``Template.hparams`` of the PPO templates: fields of PPOConfig and of
# marl's MARLConfig); each range holds both configurations' defaults. A population trains any values of them in one
# compiled program (:func:`train_population`)
HPARAMS = (Continuous("lr", 3e-4, 1e-2, log=True), Integer("update_epochs", 1, 8), Continuous("ent_coef", 0.0, 0.05))
TRACED = tuple(p.name for p in HPARAMS)  # the fields a population takes as per-member values


class ActorCritic(nn.Module):
    """Separate tanh MLPs for the policy logits and the value, as in purejaxrl. The value reads ``critic_in`` when
    given (MAPPO's centralised critic on the world state, ``templates/marl``), else the policy's input."""

    num_actions: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, critic_in: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        ortho = nn.initializers.orthogonal
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(x))
        a = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(a))
        logits = nn.Dense(self.num_actions, kernel_init=ortho(0.01))(a)
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(x if critic_in is None else critic_in))
        v = nn.tanh(nn.Dense(self.hidden, kernel_init=ortho(np.sqrt(2)))(v))
        value = nn.Dense(1, kernel_init=ortho(1.0))(v)
        return logits, jnp.squeeze(value, -1)


class Transition(NamedTuple):
    done: jax.Array
    action: jax.Array
    value: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    obs: jax.Array
    returned_episode: jax.Array
    returned_episode_return: jax.Array


class Tally(NamedTuple):
    """Per-update curve bookkeeping: each episode is credited, when it ends, to the update it started in."""

    start: jax.Array  # (num_envs,) the update the episode in progress started in
    episodes: jax.Array  # (num_updates,) episodes started in each update that have ended
    sums: jax.Array  # (num_updates, k) their summed values (the return, and what else a kernel tallies)


def tally_init(num_envs: int, num_updates: int, k: int = 1) -> Tally:
    return Tally(jnp.zeros((num_envs,), jnp.int32), jnp.zeros((num_updates,), jnp.float32),
                 jnp.zeros((num_updates, k), jnp.float32))


def tally_step(tally: Tally, done: jax.Array, values: jax.Array, update: jax.Array) -> Tally:
    """Credit the episodes that ``done`` (num_envs,) ends, with ``values`` (num_envs, k), to the update they started
    in; the next episode of those environments starts in ``update`` (an update past the last is not counted)."""
    episodes = tally.episodes.at[tally.start].add(done.astype(jnp.float32), mode="drop")
    sums = tally.sums.at[tally.start].add(jnp.where(done[:, None], values, 0.0), mode="drop")
    return Tally(jnp.where(done, update, tally.start), episodes, sums)


class RunnerState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    env_state: envs.EnvState
    obs: jax.Array
    key: jax.Array
    update: jax.Array
    tally: Tally


def ppo_clip_drift(clip_eps: float = 0.2) -> Drift:
    """PPO's clip as a drift: ``relu((r - clip(r, 1-eps, 1+eps)) * A)``."""

    def drift(ratio, advantage, progress):
        return jax.nn.relu((ratio - jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)) * advantage)

    return drift


def categorical_log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, action[..., None], axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _optimizer(config: PPOConfig, lr=None, update_epochs=None) -> optax.GradientTransformation:
    """Adam with global-norm clipping and the linear anneal; ``lr`` and ``update_epochs`` (default: the
    configuration's) may be traced values (a population's per-member hyperparameters, :func:`train_population`).
    ``config``: a PPOConfig or another configuration with its fields (marl's MARLConfig)."""
    lr = config.lr if lr is None else lr
    denom = config.num_minibatches * (config.update_epochs if update_epochs is None else update_epochs) \
        * config.num_updates
    schedule = (lambda count: lr * (1.0 - count / denom)) if config.anneal_lr else lr
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))


def optimizer_of(config: PPOConfig, hparams: dict | None) -> tuple[optax.GradientTransformation, Any]:
    """``(optimiser, entropy coefficient)`` of one member: the configuration's, or its traced ``hparams`` (over
    :data:`TRACED`); ``config`` as in :func:`_optimizer`."""
    if hparams is None:
        return _optimizer(config), config.ent_coef
    return _optimizer(config, hparams["lr"], hparams["update_epochs"]), hparams["ent_coef"]


def run_epochs(epoch: Callable, start, config: PPOConfig, hparams: dict | None) -> tuple[Any, list]:
    """An update's epochs, ``epoch(carry, None) -> (carry, aux)`` from ``start`` with ``aux`` a tuple of
    per-minibatch metrics: ``config.update_epochs`` of them (a scan), or ``hparams["update_epochs"]`` (traced: a
    loop to the member's count, under ``vmap`` to the population's largest with the others' extra epochs
    discarded). Returns the carry and each metric's mean over epochs and minibatches."""
    if hparams is None:
        carry, aux = jax.lax.scan(epoch, start, None, config.update_epochs)
        return carry, [a.mean() for a in aux]

    def counted(loop):
        i, carry, sums = loop
        carry, aux = epoch(carry, None)
        return i + 1, carry, tuple(s + a.sum() for s, a in zip(sums, aux, strict=True))

    _, aux_shapes = jax.eval_shape(epoch, start, None)
    zeros = tuple(jnp.zeros((), a.dtype) for a in aux_shapes)
    _, carry, sums = jax.lax.while_loop(lambda loop: loop[0] < hparams["update_epochs"], counted,
                                        (jnp.int32(0), start, zeros))
    return carry, [s / (hparams["update_epochs"] * config.num_minibatches) for s in sums]


def make_init(config: PPOConfig) -> Callable[[jax.Array], dict]:
    """``init(key) -> params`` for one seed; call it outside ``vmap`` (see the module docstring)."""
    env = config.make_env()
    network = ActorCritic(env.num_actions, config.hidden)

    def init(key: jax.Array) -> dict:
        return network.init(key, jnp.zeros((env.obs_size,), jnp.float32))

    return init


@functools.lru_cache(maxsize=64)
def _jitted_init(config: PPOConfig) -> Callable:
    return jax.jit(make_init(config))


@functools.lru_cache(maxsize=64)
def _population_train(config: PPOConfig, drift: Drift | None, size: int) -> Callable:
    """The compiled ``train`` of one (configuration, drift, population size), kept so that a second call with the
    same shapes compiles nothing (a drift is a static callable: a new function object is a new program)."""
    return devices.population_jit(make_train(config, drift), size)


def init_params(config: PPOConfig, keys: jax.Array) -> dict:
    """Initial parameters of several seeds, stacked, each made by one non-batched jitted call."""
    init = _jitted_init(config)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[init(k) for k in keys])


def make_train(config: PPOConfig, drift: Drift | None = None) -> Callable[[jax.Array, dict], dict]:
    """Build ``train(key, params) -> {"state": params, "metrics": per-update arrays}`` for one seed."""
    body = _train_body(config)
    drift = drift or ppo_clip_drift()
    return lambda key, params: body(key, params, drift)


def make_interpreted_train(config: PPOConfig) -> Callable[[jax.Array, dict, Program], dict]:
    """``train(key, params, program)``: PPO whose drift is an interpreted expression (``jaxlib_kernels.interpreter``).

    The program (opcodes and constants) is an argument, not a constant of the trace, so one compiled
    ``jit(vmap(train))`` runs any population of formulas of one program length.
    """
    body = _train_body(config)
    return lambda key, params, program: body(key, params, interpreter.drift_of(program))


def _train_body(config: PPOConfig) -> Callable[..., dict]:
    """``train(key, params, drift, hparams=None)`` for one seed; ``drift`` is a Python callable applied inside the
    trace. ``hparams``: None (the configuration's values, constants of the program), or ``{name: scalar}`` over
    :data:`TRACED` as traced values: one compiled program for any of their values, the epochs a loop to the
    member's own count (under ``vmap``, to the population's largest, the others' extra epochs discarded), the same
    training as the configuration with those values up to float summation order.

    The curve's metrics ``episodes`` and ``return_sum`` (per update) count every episode *started* in the update,
    to its end (after the last update the running episodes finish with the final policy): the mean return of an
    update estimates its policy's return, not only that of the short episodes that ended within it."""
    env = config.make_env()
    network = ActorCritic(env.num_actions, config.hidden)

    env_params = env.default_params
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def train(key: jax.Array, params: dict, drift: Drift, hparams: dict | None = None) -> dict:
        tx, ent_coef = optimizer_of(config, hparams)
        key, reset_key = jax.random.split(key)
        obs, env_state = reset(jax.random.split(reset_key, config.num_envs), env_params)
        runner = RunnerState(params, tx.init(params), env_state, obs, key, jnp.zeros((), jnp.int32),
                             tally_init(config.num_envs, config.num_updates))

        def env_step(runner: RunnerState, _):
            key, action_key, step_key = jax.random.split(runner.key, 3)
            logits, value = network.apply(runner.params, runner.obs)
            action = jax.random.categorical(action_key, logits)
            log_prob = categorical_log_prob(logits, action)
            obs, env_state, reward, terminated, truncated, info = step(
                jax.random.split(step_key, config.num_envs), runner.env_state, action, env_params
            )
            done = jnp.logical_or(terminated, truncated)  # purejaxrl's GAE: a truncation also cuts the bootstrap
            transition = Transition(
                done, action, value, reward, log_prob, runner.obs, info.returned_episode, info.returned_episode_return
            )
            tally = tally_step(runner.tally, info.returned_episode, info.returned_episode_return[:, None], runner.update)
            return runner._replace(env_state=env_state, obs=obs, key=key, tally=tally), transition

        def gae(traj: Transition, last_value: jax.Array) -> tuple[jax.Array, jax.Array]:
            def backward(carry, t: Transition):
                next_adv, next_value = carry
                nonterminal = 1.0 - t.done
                delta = t.reward + config.gamma * next_value * nonterminal - t.value
                adv = delta + config.gamma * config.gae_lambda * nonterminal * next_adv
                return (adv, t.value), adv

            _, advantages = jax.lax.scan(
                backward, (jnp.zeros_like(last_value), last_value), traj, reverse=True, unroll=16
            )
            return advantages, advantages + traj.value

        def loss_fn(params, batch, progress):
            traj, advantages, targets = batch
            logits, value = network.apply(params, traj.obs)
            log_prob = categorical_log_prob(logits, traj.action)
            # value loss, clipped as in PPO
            value_clipped = traj.value + jnp.clip(value - traj.value, -0.2, 0.2)
            value_loss = 0.5 * jnp.maximum((value - targets) ** 2, (value_clipped - targets) ** 2).mean()
            # mirror-learning policy loss with the pluggable drift
            adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = jnp.exp(log_prob - traj.log_prob)
            drift_value = drift(ratio, adv, progress)
            policy_loss = -(ratio * adv - drift_value).mean()
            entropy = categorical_entropy(logits).mean()
            total = policy_loss + config.vf_coef * value_loss - ent_coef * entropy
            return total, (policy_loss, value_loss, entropy, drift_value.mean())

        def update_step(runner: RunnerState, _):
            runner, traj = jax.lax.scan(env_step, runner, None, config.num_steps)
            _, last_value = network.apply(runner.params, runner.obs)
            advantages, targets = gae(traj, last_value)
            progress = runner.update.astype(jnp.float32) / config.num_updates

            def epoch(carry, _):
                params, opt_state, key = carry
                key, perm_key = jax.random.split(key)
                perm = jax.random.permutation(perm_key, config.batch_size)
                flat = jax.tree_util.tree_map(
                    lambda x: x.reshape((config.batch_size,) + x.shape[2:]), (traj, advantages, targets)
                )
                shuffled = jax.tree_util.tree_map(lambda x: jnp.take(x, perm, axis=0), flat)
                minibatches = jax.tree_util.tree_map(
                    lambda x: x.reshape((config.num_minibatches, -1) + x.shape[1:]), shuffled
                )

                def minibatch(carry, batch):
                    params, opt_state = carry
                    grads, aux = jax.grad(loss_fn, has_aux=True)(params, batch, progress)
                    updates, opt_state = tx.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), aux

                (params, opt_state), aux = jax.lax.scan(minibatch, (params, opt_state), minibatches)
                return (params, opt_state, key), aux

            (params, opt_state, key), means = run_epochs(
                epoch, (runner.params, runner.opt_state, runner.key), config, hparams)
            metrics = {"policy_loss": means[0], "value_loss": means[1], "entropy": means[2], "drift": means[3]}
            runner = runner._replace(params=params, opt_state=opt_state, key=key, update=runner.update + 1)
            return runner, metrics

        runner, metrics = jax.lax.scan(update_step, runner, None, config.num_updates)
        # the episodes still running go on with the final policy until they end (at most ``env.max_steps``)
        runner, _ = jax.lax.scan(env_step, runner, None, env.max_steps)
        metrics = {**metrics, "episodes": runner.tally.episodes, "return_sum": runner.tally.sums[:, 0]}
        return {"state": runner.params, "metrics": metrics}

    return train


def make_random_policy_eval(config: PPOConfig) -> Callable[[jax.Array], dict]:
    """Returns of a uniformly random policy over the same number of steps (a floor for the tests and papers)."""
    env = config.make_env()
    env_params = env.default_params
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def run(key: jax.Array) -> dict:
        key, reset_key = jax.random.split(key)
        _, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, config.num_envs), env_params)

        def step(carry, _):
            env_state, key = carry
            key, action_key, step_key = jax.random.split(key, 3)
            action = jax.random.randint(action_key, (config.num_envs,), 0, env.num_actions)
            _, env_state, _, _, _, info = env_step(jax.random.split(step_key, config.num_envs), env_state, action,
                                                   env_params)
            return (env_state, key), (info.returned_episode.sum(), (info.returned_episode_return * info.returned_episode).sum())

        _, (episodes, return_sum) = jax.lax.scan(step, (env_state, key), None, config.env_steps // config.num_envs)
        return {"episodes": episodes.sum(), "return_sum": return_sum.sum()}

    return run


def final_window(episodes, last_fraction: float = 0.1, xp=np):
    """Mask of the updates a final return averages (per seed, leading axes kept): the last fraction of updates,
    reaching back to the latest update that started an episode where none of them did (a short run whose last
    updates only continued episodes). ``xp``: numpy, or ``jax.numpy`` under a trace."""
    n = episodes.shape[-1]
    k = max(1, round(n * last_fraction))
    index = xp.arange(n)
    latest = xp.max(xp.where(episodes > 0, index, -1), axis=-1)
    return index >= xp.minimum(n - k, latest)[..., None]


def mean_return(metrics: dict, last_fraction: float = 0.1) -> np.ndarray:
    """Episode-weighted mean return over the last fraction of updates (:func:`final_window`), per seed."""
    episodes = np.asarray(metrics["episodes"], dtype=np.float64)
    return_sum = np.asarray(metrics["return_sum"], dtype=np.float64)
    window = final_window(episodes, last_fraction)
    ep, rs = (episodes * window).sum(-1), (return_sum * window).sum(-1)
    return np.where(ep > 0, rs / np.maximum(ep, 1), 0.0)


def seed_keys(seeds: list[int] | np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Per-seed keys for ``train`` and, folded apart from them, for ``init_params``."""
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, dtype=jnp.uint32))
    return keys, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)


def train_seeds(config: PPOConfig, drift: Drift | None, seeds: list[int] | np.ndarray) -> dict:
    """Train one drift on several seeds in one ``jit(vmap(train))`` call; host arrays out.

    A drift with an expression tree (``interpreter.expression_of``: a rendered symbolic plug-in, or a callable
    carrying ``__expression__``) runs through the interpreter with the configuration's :data:`TRACED` values as
    traced inputs (:func:`train_population`, one member), so every such drift, whatever its learning rate, entropy
    coefficient and update epochs, shares one compiled program per (configuration's other fields, number of seeds,
    program length): a run's tuned baselines and candidate compile once per setting. Any other drift is its own
    program (one compile each).
    The seeds are split over the local devices that divide their number (``devices.population_jit``): one
    device per core when the process asked XLA for them (``devices.force_cpu_devices``), else one.
    """
    expr = interpreter.expression_of(drift) if drift is not None else None
    if expr is not None:
        return one_member(train_population, config, expr, seeds)
    keys, init_keys = seed_keys(seeds)
    params = init_params(config, init_keys)
    train = _population_train(config, drift, len(seeds))
    out = train(keys, params)
    return jax.tree_util.tree_map(np.asarray, out["metrics"])


@functools.lru_cache(maxsize=64)
def _interpreted_population_train(config: PPOConfig, size: int, length: int) -> Callable:
    """The compiled interpreted ``train`` of one (configuration, population size, program length)."""
    # length: part of the cache key only: a new length is a new shape, so jit compiles it anyway
    return devices.kept_population_jit(make_interpreted_train(config), size, "ppo_interpreted",
                                       (config, size, length))


def train_programs(config: PPOConfig, programs: Program, seeds: list[int] | np.ndarray) -> dict:
    """Train a population of interpreted drifts (``programs``: (C, L) arrays) on the same seeds, in one compiled
    call over candidates x seeds; host arrays of shape (C, S, ...) out (``interpreter.train_population``).

    Candidate ``c`` on seed ``s`` starts from the same parameters and key as ``train_seeds`` gives seed ``s``, so
    a candidate's result does not depend on the others in its population (up to float summation order).
    """
    keys, init_keys = seed_keys(seeds)
    return interpreter.train_population(
        lambda size, length: _interpreted_population_train(config, size, length), programs, keys,
        init_params(config, init_keys))


def population_config(config: PPOConfig) -> PPOConfig:
    """The configuration a population with per-member :data:`TRACED` values compiles for: those fields at their
    class defaults (its program never reads them), so every value of them shares one program. ``config``: a
    PPOConfig or marl's MARLConfig."""
    fields = type(config).__dataclass_fields__
    return dataclasses.replace(config, **{name: fields[name].default for name in TRACED})


def one_member(train_population_: Callable, config: PPOConfig, expr, seeds: list[int] | np.ndarray) -> dict:
    """``train_population_(config, programs, hparams, seeds)`` (this module's or marl's) of the one drift
    ``expr`` with the configuration's own :data:`TRACED` values; host arrays (S, ...)."""
    values = {name: [getattr(config, name)] for name in TRACED}
    out = train_population_(config, interpreter.encode_population([expr]), values, seeds)
    return jax.tree_util.tree_map(lambda x: x[0], out)


def traced_values(hparams: dict) -> dict:
    """``{name: (C,) values}`` over :data:`TRACED` as the arrays a population's members take."""
    return {name: np.asarray(hparams[name], np.int32 if name == "update_epochs" else np.float32) for name in TRACED}


def make_hparam_train(config: PPOConfig) -> Callable[[jax.Array, dict, Program, dict], dict]:
    """``train(key, params, program, hparams)``: :func:`make_interpreted_train` with the :data:`TRACED`
    hyperparameters as traced arguments (``{name: scalar}``) instead of the configuration's."""
    body = _train_body(config)
    return lambda key, params, program, hparams: body(key, params, interpreter.drift_of(program), hparams)


@functools.lru_cache(maxsize=64)
def _hparam_population_train(config: PPOConfig, size: int, length: int) -> Callable:
    """The compiled ``make_hparam_train`` of one (configuration, population size, program length)."""
    return devices.kept_population_jit(make_hparam_train(config), size, "ppo_hparams", (config, size, length))


def train_population(config: PPOConfig, programs: Program, hparams: dict, seeds: list[int] | np.ndarray) -> dict:
    """:func:`train_programs` with per-candidate hyperparameters: candidate ``c`` trains with ``hparams[name][c]``
    for every ``name`` of :data:`TRACED` (the configuration's other fields shared), all in one compiled call; host
    arrays (C, S, ...). Candidate ``c`` matches ``train_programs`` of the configuration with its values, up to
    float summation order; any values of the traced fields reuse one compiled program per (configuration,
    population size, program length)."""
    static = population_config(config)
    keys, init_keys = seed_keys(seeds)
    return interpreter.train_population(lambda size, length: _hparam_population_train(static, size, length),
                                        programs, keys, init_params(static, init_keys),
                                        per_candidate=traced_values(hparams))
