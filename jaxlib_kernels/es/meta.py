"""ES meta-training over evosax 0.3's ``init / ask / tell`` (Lange, 2023, "evosax: JAX-based Evolution Strategies";
Salimans et al., 2017, "Evolution Strategies as a Scalable Alternative to Reinforcement Learning").

A candidate is data (the weights of a drift MLP, a synthetic dataset): one generation asks the strategy for a
population, evaluates it with ONE ``jax.vmap`` of ``fitness_fn(key, candidate) -> return`` and tells the strategy the
fitness, all inside one ``jax.jit``, so every generation reuses one compiled call. OpenES (antithetic sampling,
centred ranks, Adam on the mean) is the default; any evosax strategy is available by name through
:data:`STRATEGIES`. evosax minimises and we maximise returns: :func:`evosax_fitness` is the only sign flip.
``run_meta`` writes the search state to ``checkpoint_dir`` every ``checkpoint_every`` generations (``.npz`` of host
arrays) and resumes from the last checkpoint it finds there.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import evosax.algorithms
import jax
import jax.numpy as jnp
import numpy as np
import optax
from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm
from evosax.algorithms.population_based.base import PopulationBasedAlgorithm
from evosax.core import fitness_shaping
from jax.flatten_util import ravel_pytree

from jaxlib_kernels.registry import Registry

FitnessFn = Callable[[jax.Array, Any], jax.Array]
"""``fitness_fn(key, candidate) -> scalar return`` (higher is better)."""

STRATEGIES: Registry[type] = Registry("evolution strategy", dict(evosax.algorithms.algorithms))
"""Every evosax 0.3 strategy by its evosax name (``Open_ES``, ``SNES``, ``CMA_ES``, ``SimpleGA``, ...)."""

FITNESS_SHAPING: Registry[Callable] = Registry(
    "fitness shaping",
    {
        "centered_rank": fitness_shaping.centered_rank_fitness_shaping_fn,
        "standardize": fitness_shaping.standardize_fitness_shaping_fn,
        "normalize": fitness_shaping.normalize_fitness_shaping_fn,
        "identity": fitness_shaping.identity_fitness_shaping_fn,
        "weights": fitness_shaping.weights_fitness_shaping_fn,
    },
)
"""evosax's own fitness shaping functions by name."""

# Strategies whose optax optimizer follows a plain first-order search gradient: ``lr`` sets an Adam step there.
# Natural-gradient strategies (SNES, xNES, SimpleES, PGPE's ClipUp) keep evosax's own step.
_FIRST_ORDER = frozenset({"Open_ES", "SV_Open_ES", "ARS", "ASEBO", "ESMC", "GuidedES", "NoiseReuseES", "PersistentES"})


@dataclasses.dataclass(frozen=True)
class ESConfig:
    """Static settings of an ES search; ``strategy`` is an evosax name (see :data:`STRATEGIES`)."""

    strategy: str = "Open_ES"
    population_size: int = 8
    std: float = 0.1
    lr: float | None = 0.05
    antithetic: bool = True
    fitness_shaping: str | None = "centered_rank"  # None keeps the strategy's own (e.g. CMA-ES weights)
    shared_eval_key: bool = True  # common random numbers: every candidate of a generation sees the same key
    strategy_kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        STRATEGIES[self.strategy]  # raises with close matches
        if self.fitness_shaping is not None:
            FITNESS_SHAPING[self.fitness_shaping]
        if self.population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {self.population_size}")


def evosax_fitness(returns: jax.Array) -> jax.Array:
    """The only sign flip: returns (maximised) <-> evosax fitness (minimised). Its own inverse."""
    return -returns


def make_strategy(config: ESConfig, solution: Any) -> tuple[Any, Any]:
    """``(strategy, es_params)`` for ``config`` over candidates shaped like ``solution`` (any pytree)."""
    cls = STRATEGIES[config.strategy]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "std_schedule" in accepted:
        kwargs["std_schedule"] = optax.constant_schedule(config.std)
    if "use_antithetic_sampling" in accepted:
        kwargs["use_antithetic_sampling"] = config.antithetic
    if config.lr is not None and "optimizer" in accepted and config.strategy in _FIRST_ORDER:
        kwargs["optimizer"] = optax.adam(config.lr)
    if config.fitness_shaping is not None and "fitness_shaping_fn" in accepted:
        kwargs["fitness_shaping_fn"] = FITNESS_SHAPING[config.fitness_shaping]
    kwargs.update(dict(config.strategy_kwargs))
    if config.antithetic and kwargs.get("use_antithetic_sampling") and config.population_size % 2:
        raise ValueError(f"antithetic sampling needs an even population, got {config.population_size}")
    strategy = cls(population_size=config.population_size, solution=solution, **kwargs)
    es_params = strategy.default_params
    if hasattr(es_params, "std_init"):
        es_params = es_params.replace(std_init=jnp.asarray(config.std, jnp.float32))
    return strategy, es_params


def make_population_eval(fitness_fn: FitnessFn, shared_eval_key: bool = True) -> Callable:
    """``evaluate(key, population) -> returns``: one ``jax.vmap`` of ``fitness_fn`` over the candidates."""

    def evaluate(key: jax.Array, population: Any) -> jax.Array:
        if shared_eval_key:
            return jax.vmap(fitness_fn, in_axes=(None, 0))(key, population)
        size = jax.tree_util.tree_leaves(population)[0].shape[0]
        return jax.vmap(fitness_fn)(jax.random.split(key, size), population)

    return evaluate


def make_meta_step(
    strategy: Any, fitness_fn: FitnessFn, shared_eval_key: bool = True
) -> Callable[[jax.Array, Any, Any], tuple[Any, dict]]:
    """A jitted generation ``step(key, state, es_params) -> (state, metrics)``: ask, one vmapped evaluation, tell."""
    evaluate = make_population_eval(fitness_fn, shared_eval_key)

    @jax.jit
    def step(key: jax.Array, state: Any, es_params: Any) -> tuple[Any, dict]:
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, asked = strategy.ask(ask_key, state, es_params)
        returns = evaluate(eval_key, population)
        return _tell(strategy, tell_key, population, returns, asked, es_params, like=state)

    return step


def _tell(strategy: Any, key: jax.Array, population: Any, returns: jax.Array, state: Any,
          es_params: Any, like: Any = None) -> tuple[Any, dict]:
    """``strategy.tell`` on returns (negated once, in ``evosax_fitness``), plus the generation's metrics;
    the new state keeps the dtypes of ``like`` (default: ``state``)."""
    new_state, _ = strategy.tell(key, population, evosax_fitness(returns), state, es_params)
    # keep the input's dtypes: some strategies return weakly typed leaves (a Python float std), which would
    # give the next call a different signature and a second compile
    like = state if like is None else like
    new_state = jax.tree_util.tree_map(lambda new, old: jax.lax.convert_element_type(new, old.dtype), new_state, like)
    finite = jnp.where(jnp.isfinite(returns), returns, jnp.nan)
    metrics = {
        "return_mean": jnp.nanmean(finite),
        "return_std": jnp.nanstd(finite),
        "return_max": jnp.nanmax(finite),
        "return_min": jnp.nanmin(finite),
        "best_return": evosax_fitness(new_state.best_fitness),
        "num_failed": jnp.sum(~jnp.isfinite(returns)),
    }
    return new_state, metrics


def init_state(key: jax.Array, strategy: Any, es_params: Any, mean: Any, fitness_fn: FitnessFn | None = None,
               shared_eval_key: bool = True) -> Any:
    """The strategy's initial state around ``mean``; population-based strategies evaluate a first population."""
    if isinstance(strategy, DistributionBasedAlgorithm):
        return strategy.init(key, mean, es_params)
    if isinstance(strategy, PopulationBasedAlgorithm):
        if fitness_fn is None:
            raise ValueError(f"{type(strategy).__name__} is population-based: init_state needs fitness_fn")
        noise_key, eval_key, init_key = jax.random.split(key, 3)
        flat, unravel = ravel_pytree(mean)
        if hasattr(es_params, "std_init"):
            std = float(es_params.std_init)
        else:  # the ESConfig std that make_strategy put into the strategy's schedule
            std = float(strategy.std_schedule(0)) if hasattr(strategy, "std_schedule") else 0.1
        z = jax.random.normal(noise_key, (strategy.population_size, flat.size))
        population = jax.vmap(unravel)(flat + std * z)
        returns = jax.jit(make_population_eval(fitness_fn, shared_eval_key))(eval_key, population)
        return strategy.init(init_key, population, evosax_fitness(returns), es_params)
    return strategy.init(key, es_params)


def search_mean(strategy: Any, state: Any) -> Any:
    """The centre of the search (distribution-based) or the best member (population-based), unravelled."""
    if isinstance(strategy, DistributionBasedAlgorithm):
        return strategy.get_mean(state)
    return strategy.get_best_solution(state)


# --- checkpoints -------------------------------------------------------------------------------------------------

_CKPT = re.compile(r"^gen_(\d{6,})\.npz$")


def _host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _signature(state: Any) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(state)
    return json.dumps({"treedef": str(treedef), "shapes": [list(np.shape(x)) for x in leaves]})


def checkpoint_path(checkpoint_dir: str | os.PathLike, generation: int) -> Path:
    return Path(checkpoint_dir) / f"gen_{generation:06d}.npz"


def save_checkpoint(checkpoint_dir: str | os.PathLike, generation: int, state: Any, history: dict) -> Path:
    """Write the search state after ``generation`` generations and the metric history; atomic rename."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i:04d}": _host(x) for i, x in enumerate(leaves)}
    arrays |= {f"history__{name}": np.asarray(v) for name, v in history.items()}
    arrays["generation"] = np.asarray(generation)
    arrays["signature"] = np.asarray(_signature(state))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    path = checkpoint_path(folder, generation)
    os.replace(tmp, path)
    return path


def latest_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint of the highest generation in ``checkpoint_dir``, or None."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).iterdir() if (m := _CKPT.match(p.name))]
    return max(found)[1] if found else None


def load_checkpoint(path: str | os.PathLike, like_state: Any) -> tuple[int, Any, dict]:
    """``(generation, state, history)`` from ``path``; ``like_state`` gives the tree structure to refill."""
    with np.load(path, allow_pickle=False) as data:
        if str(data["signature"]) != _signature(like_state):
            raise ValueError(f"checkpoint {path} does not match this search (different strategy or candidate shape)")
        leaves, treedef = jax.tree_util.tree_flatten(like_state)
        loaded = [data[f"leaf_{i:04d}"] for i in range(len(leaves))]
        history = {k.removeprefix("history__"): data[k] for k in data.files if k.startswith("history__")}
        generation = int(data["generation"])
    restored = [
        jax.random.wrap_key_data(jnp.asarray(x)) if jnp.issubdtype(ref.dtype, jax.dtypes.prng_key) else jnp.asarray(x)
        for x, ref in zip(loaded, leaves)
    ]
    return generation, jax.tree_util.tree_unflatten(treedef, restored), history


def flat_candidate(tree: Any) -> dict[str, np.ndarray]:
    """A candidate pytree as named host arrays (``obs``, ``w0`` ... or ``0/w`` for lists of dicts)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v) for path, v in leaves}


def save_candidate(path: str | os.PathLike, candidate: Any) -> None:
    """``candidate`` as an ``.npz`` of named host arrays (:func:`flat_candidate`)."""
    np.savez(path, **flat_candidate(candidate))


def load_candidate(search_dir: str | os.PathLike, like: Any, which: str = "search_mean") -> Any:
    """The candidate saved as ``<search_dir>/<which>.npz`` (``search_mean`` or ``best``), refilled into ``like``'s
    tree."""
    with np.load(Path(search_dir) / f"{which}.npz") as data:
        leaves = [data[n] for n in flat_candidate(like)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def canonical_state(state: Any) -> Any:
    """Host round trip to strongly typed device arrays: fresh, stepped and restored states share one signature."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(_host(x)), state)


# --- the loop ----------------------------------------------------------------------------------------------------


def drive(
    step: Callable[[Any, Any, Any], tuple[Any, dict]],
    state: Any,
    es_params: Any,
    start: int,
    end: int,
    key_of: Callable[[int], Any],
    history: dict | None = None,
    callback: Callable[[int, dict], None] | None = None,
    checkpoint: Callable[[int, Any, dict], None] | None = None,
) -> tuple[Any, dict]:
    """THE ES generation loop (every ES search of the package runs through it): generations ``[start, end)``, each
    ``step(key_of(g), state, es_params) -> (state, metrics)``; the metrics (host arrays) are appended to ``history``
    (lists per name), ``callback(g, metrics)`` follows each generation and ``checkpoint(g + 1, state, history)``
    may save it. ``step`` is a fused jitted generation (:func:`make_meta_step`) or ask / evaluate / tell with the
    evaluation elsewhere (:func:`ask_tell_step`). Returns ``(state, history)``."""
    history = {k: list(v) for k, v in (history or {}).items()}
    for generation in range(start, end):
        state, metrics = step(key_of(generation), state, es_params)
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
        if callback is not None:
            callback(generation, metrics)
        if checkpoint is not None:
            checkpoint(generation + 1, state, history)
    return state, history


def ask_tell_step(ask: Callable, evaluate: Callable[[jax.Array, Any], Any], tell: Callable) -> Callable:
    """A generation ``step(key, state, es_params)`` for :func:`drive` whose population is evaluated outside the
    jitted ask and tell (``evaluate(key, population) -> returns``: Ray workers, another process); the key is split
    as in :func:`make_meta_step`, so both give the same search."""

    def step(key: jax.Array, state: Any, es_params: Any) -> tuple[Any, dict]:
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, state = ask(ask_key, state, es_params)
        returns = evaluate(eval_key, population)
        return tell(tell_key, population, jnp.asarray(returns), state, es_params)

    return step


def run_meta(
    key: jax.Array,
    strategy: Any,
    es_params: Any,
    fitness_fn: FitnessFn,
    mean: Any,
    generations: int,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    shared_eval_key: bool = True,
    step: Callable | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Meta-train for ``generations`` generations (:func:`drive`), resuming from the last checkpoint in
    ``checkpoint_dir``.

    Generation ``g`` uses ``fold_in(loop_key, g)``, so an interrupted and resumed run equals an uninterrupted one.
    Returns host values: ``{"state", "metrics", "mean", "best", "best_return", "generation", "resumed_from"}``.
    """
    init_key, loop_key = jax.random.split(key)
    state = canonical_state(init_state(init_key, strategy, es_params, mean, fitness_fn, shared_eval_key))
    start, history = 0, {}
    ckpt = latest_checkpoint(checkpoint_dir)
    if ckpt is not None:
        start, state, history = load_checkpoint(ckpt, state)

    def checkpoint(done: int, state: Any, history: dict) -> None:
        if checkpoint_dir is not None and (done % checkpoint_every == 0 or done == generations):
            save_checkpoint(checkpoint_dir, done, state, {k: np.asarray(v) for k, v in history.items()})

    state, history = drive(step or make_meta_step(strategy, fitness_fn, shared_eval_key), state, es_params, start,
                           generations, lambda g: jax.random.fold_in(loop_key, g), history, callback, checkpoint)
    best = ravel_pytree(mean)[1](state.best_solution)
    return {
        "state": jax.tree_util.tree_map(_host, state),
        "metrics": {k: np.asarray(v) for k, v in history.items()},
        "mean": jax.tree_util.tree_map(np.asarray, search_mean(strategy, state)),
        "best": jax.tree_util.tree_map(np.asarray, best),
        "best_return": float(evosax_fitness(state.best_fitness)),
        "generation": max(start, generations),
        "resumed_from": start,
    }


def meta_train(
    key: jax.Array,
    fitness_fn: FitnessFn,
    mean: Any,
    config: ESConfig,
    generations: int,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Convenience: build the strategy of ``config`` around ``mean`` and :func:`run_meta` it."""
    strategy, es_params = make_strategy(config, mean)
    return run_meta(
        key, strategy, es_params, fitness_fn, mean, generations, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, shared_eval_key=config.shared_eval_key, callback=callback,
    )


def resolve_strategy(name: str) -> str:
    """The evosax name of ``name``: exact, or the one name equal to it ignoring case and underscores ("OpenES",
    "cma_es", "snes"); otherwise :class:`UnknownNameError` with close matches."""
    if name in STRATEGIES:
        return name
    folded = name.replace("_", "").replace("-", "").lower()
    same = [n for n in STRATEGIES if n.replace("_", "").lower() == folded]
    if len(same) == 1:
        return same[0]
    return STRATEGIES[name] and name  # raises with close matches


def make_ask_tell(strategy: Any) -> tuple[Callable, Callable]:
    """Jitted ``ask(key, state, es_params) -> (population, state)`` and ``tell(key, population, returns, state,
    es_params) -> (state, metrics)``: :func:`make_meta_step` with the evaluation left out, for a caller that evaluates
    the population elsewhere (Ray workers). ``tell`` takes returns (maximised) and negates them here."""

    @jax.jit
    def ask(key: jax.Array, state: Any, es_params: Any) -> tuple[Any, Any]:
        return strategy.ask(key, state, es_params)

    @jax.jit
    def tell(key: jax.Array, population: Any, returns: jax.Array, state: Any, es_params: Any) -> tuple[Any, dict]:
        return _tell(strategy, key, population, returns, state, es_params)

    return ask, tell
