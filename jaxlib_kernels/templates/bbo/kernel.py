"""The ``bbo`` kernel: one ES loop around a plug-in update rule or an evosax strategy, jit(vmap) over seeds and
functions; the gate's checks and the behaviour probe.

Plug-in: ``update(population, fitness, mean, std, progress) -> (mean, std)`` with ``population`` (P, D),
``fitness`` (P,) (lower is better), ``mean`` and ``std`` (D,), ``progress`` the fraction of the budget used. The
kernel samples ``population = mean + std * z`` with ``z ~ N(0, I)``, evaluates the regret, hands everything to the
plug-in and samples the next population around what it returns. A returned value that is not finite keeps the
previous one (counted in the ``repairs`` extra); ``std`` is clipped to [1e-12, 1e3]. The plug-in sees the same
fitness values as evosax's strategies: the regret ``f(x) - f(x_opt)`` of evosax's BBOB functions.

Stateful baselines (OpenES, SNES, Sep-CMA-ES, CMA-ES) run through evosax 0.3 in the same loop: their candidate text
is ``{"evosax": NAME, ...}`` (see :class:`EvosaxSpec`), not code, so nothing untrusted is executed for them. So does
the optimiser library's pretrained Evolution Transformer (``{"sequence_model": "evotf", "weights": DIGEST}``,
:func:`parse_sequence_model`; the digest of the shipped weights, so that new weights are a new candidate).

Metric of a unit: ``log10`` of the final best regret, floored at 1e-12 (float32), averaged over the setting's
functions per seed, minimised. Curve: the same quantity of the best-so-far regret after every generation.
Random keys are XLA's RngBitGenerator ("rbg") keys: they compile several times faster than threefry's.

Compiled programs: the problem draws (instances with their rotations, initial means, keys) once per (functions,
dimension, initial range), whatever the population, generations or candidate; the plug-ins' noise once per shape;
and the ES loop once per *program* (:func:`program_of`: a structure of the rule family, whose float literals are
per-member values; an evosax strategy with its options; the sequence model; the text of any other plug-in),
configuration without ``init_std`` and number of members, jit(vmap over members (vmap over seeds (vmap over
functions))) with each member's constants and ``init_std`` traced (:func:`population_program`). A unit is a
population of one (:func:`run_seeds`), a tree stage's nodes one call per program (the template's
``population``), so units and nodes that differ only in those values compile nothing new.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.optimisers import evotf
from jaxlib_kernels.templates.bbo import problems, rules

FLOOR = 1e-12
# XLA's RngBitGenerator keys: threefry's bit generation inside a scan took 8 s (vmapped: 19 s) to compile on our
# shared 2-core CPU, "rbg" 2.6 s; the kernel owns its randomness, so it uses these keys throughout
PRNG = "rbg"
STD_RANGE = (1e-12, 1e3)
EVOSAX_STRATEGIES = ("Open_ES", "SNES", "Sep_CMA_ES", "CMA_ES", "RandomSearch", "HillClimbing", "EvoTF_ES")
EVOSAX_PREFIX = '{"evosax"'
SEQUENCE_PREFIX = '{"sequence_model"'


@dataclasses.dataclass(frozen=True)
class BBOConfig:
    """One unit's problem: functions, dimension, population, generations, the initial search distribution."""

    functions: tuple[str, ...]
    dim: int
    population: int
    generations: int
    init_std: float = 1.0
    init_range: float = 4.0  # the initial mean is uniform in [-init_range, init_range]^D, drawn from the seed


@dataclasses.dataclass(frozen=True)
class EvosaxSpec:
    """A stateful baseline run through evosax: its strategy class name and options (hashable)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


def evosax_text(name: str, **options: Any) -> str:
    """Candidate text of an evosax baseline (canonical JSON)."""
    return json.dumps({"evosax": name, **options}, sort_keys=True, separators=(",", ":"))


def parse_evosax(text: str) -> EvosaxSpec:
    """``{"evosax": NAME, options...}`` -> EvosaxSpec; raises ValueError with the reason."""
    value = json.loads(text)
    if not isinstance(value, dict) or value.get("evosax") not in EVOSAX_STRATEGIES:
        raise ValueError(f"an evosax candidate names one of {', '.join(EVOSAX_STRATEGIES)}")
    allowed = {"evosax", "lr", "std"}
    extra = sorted(set(value) - allowed)
    if extra:
        raise ValueError(f"unknown evosax option(s) {extra}; allowed: lr, std")
    for k in ("lr", "std"):
        if k in value and not (isinstance(value[k], (int, float)) and 0 < float(value[k]) < 1e3):
            raise ValueError(f"evosax option {k!r} must be a positive number")
    return EvosaxSpec(value["evosax"], tuple(sorted((k, float(v)) for k, v in value.items() if k != "evosax")))


def weights_digest() -> str:
    """The first 16 hex digits of the SHA-256 of the library's pretrained Evolution Transformer weights."""
    return hashlib.sha256(evotf.PRETRAINED.read_bytes()).hexdigest()[:16]


def sequence_model_text() -> str:
    """Candidate text of the pretrained Evolution Transformer (canonical JSON naming the shipped weights)."""
    return json.dumps({"sequence_model": "evotf", "weights": weights_digest()}, sort_keys=True, separators=(",", ":"))


def parse_sequence_model(text: str) -> evotf.EvoTF:
    """``{"sequence_model": "evotf", "weights": DIGEST}`` -> the pretrained model; ValueError with the reason (also
    when the digest is not that of the weights the library ships now)."""
    value = json.loads(text)
    if not isinstance(value, dict) or value.get("sequence_model") != "evotf" or set(value) != {"sequence_model",
                                                                                                 "weights"}:
        raise ValueError('a sequence-model candidate is {"sequence_model": "evotf", "weights": DIGEST}')
    if value["weights"] != weights_digest():
        raise ValueError(f"the candidate names weights {value['weights']!r}, the library ships {weights_digest()!r}")
    return evotf.pretrained()


# ---- strategies: init / ask / tell ----------------------------------------------------------------------------


def _safe(new: jax.Array, old: jax.Array) -> tuple[jax.Array, jax.Array]:
    new = jnp.broadcast_to(jnp.asarray(new, old.dtype), old.shape)
    ok = jnp.isfinite(new)
    return jnp.where(ok, new, old), jnp.sum(~ok)


def plugin_strategy(update: Callable, population: int, dim: int):
    """init/ask/tell of the stateless plug-in: the state is (mean, std, repairs); ``ask`` uses the shared noise."""

    def init(key, mean, std):
        return {"mean": mean, "std": std, "repairs": jnp.int32(0)}

    def ask(key, z, state):
        return state["mean"] + state["std"] * z, state

    def tell(key, pop, fitness, state, progress):
        mean, std = update(pop, fitness, state["mean"], state["std"], progress)
        mean, bad_m = _safe(mean, state["mean"])
        std, bad_s = _safe(std, state["std"])
        std = jnp.clip(std, *STD_RANGE)
        return {"mean": mean, "std": std, "repairs": state["repairs"] + bad_m + bad_s}

    return init, ask, tell


def evosax_strategy(spec: EvosaxSpec, population: int, dim: int):
    """init/ask/tell of an evosax 0.3 strategy (its own state and sampling), in the same loop."""
    import evosax.algorithms as ea
    import optax

    solution = jnp.zeros(dim)
    lr = spec.option("lr")
    if spec.name == "Open_ES":
        strategy = ea.Open_ES(population, solution, optimizer=optax.adam(lr or 0.05),
                              std_schedule=optax.constant_schedule(spec.option("std", 0.5)))
    elif spec.name == "SNES":
        strategy = ea.SNES(population, solution, optimizer=optax.sgd(lr or 1.0))
    else:
        strategy = getattr(ea, spec.name)(population, solution)
    params = strategy.default_params

    def init(key, mean, std):
        p = params
        if hasattr(params, "std_init") and spec.name != "Open_ES":
            p = params.replace(std_init=jnp.asarray(spec.option("std", jnp.mean(std)), jnp.float32))
        return {"es": strategy.init(key, mean, p), "params": p, "repairs": jnp.int32(0)}

    def ask(key, z, state):
        pop, es = strategy.ask(key, state["es"], state["params"])
        return pop, {**state, "es": es}

    def tell(key, pop, fitness, state, progress):
        es, _ = strategy.tell(key, pop, fitness, state["es"], state["params"])
        return {**state, "es": es}

    return init, ask, tell


def strategy_of(candidate: Any, population: int, dim: int):
    if hasattr(candidate, "strategy"):  # a sequence model (the Evolution Transformer) with its own state
        return candidate.strategy(population, dim)
    if isinstance(candidate, EvosaxSpec):
        return evosax_strategy(candidate, population, dim)
    return plugin_strategy(candidate, population, dim)


# ---- the ES loop ------------------------------------------------------------------------------------------------


def _draws(config: BBOConfig, plugin: bool) -> Callable:
    """``(seeds, fns) -> {"inst", "mean0", "key", "noise_key"}`` per (seed, function) (traceable): the BBOB instance,
    the initial mean, the loop's key and the key of the plug-ins' noise; with ``plugin`` also that noise ``"z"``."""
    G, P, D = config.generations, config.population, config.dim

    def one(seed, fn_index):
        key = jax.random.fold_in(jax.random.key(seed, impl=PRNG), fn_index)
        k_inst, k_mean, k_noise, k_loop = jax.random.split(key, 4)
        out = {"inst": problems.instance(k_inst, D),
               "mean0": jax.random.uniform(k_mean, (D,), minval=-config.init_range, maxval=config.init_range),
               "key": jax.random.key_data(k_loop), "noise_key": jax.random.key_data(k_noise)}
        if plugin:
            out["z"] = jax.random.normal(k_noise, (G, P, D))
        return out

    draws = jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))

    def setup(seeds, fns):
        out = draws(seeds, fns)
        inst = out["inst"]  # the rotations are made outside the vmaps, one matrix at a time (problems.rotations)
        both = problems.rotations(jnp.stack([inst["R"], inst["Q"]]))
        return {**out, "inst": {**inst, "R": both[0], "Q": both[1]}}

    return setup


@functools.lru_cache(maxsize=32)
def _setup(config: BBOConfig, plugin: bool) -> Callable:
    """Compiled once per configuration, shared by every candidate: per (seed, function) the BBOB instance, the
    initial mean, a key, and for plug-ins the standard normal noise of every generation (common random numbers:
    every plug-in sees the same draws)."""
    return jax.jit(_draws(config, plugin))


@functools.lru_cache(maxsize=32)
def _problems(functions: tuple[str, ...], dim: int, init_range: float) -> Callable:
    """:func:`_setup` without the noise, compiled once per problem (the instances' rotations make it the slow
    compile): shared by every population size and number of generations, plug-ins and evosax alike."""
    return jax.jit(_draws(BBOConfig(functions, dim, 1, 1, init_range=init_range), False))


@functools.lru_cache(maxsize=32)
def _noise(generations: int, population: int, dim: int) -> Callable:
    """The plug-ins' noise ``z`` (S, F, G, P, D) from the keys ``noise_key`` (S, F) of :func:`_problems`: what
    :func:`_setup` draws."""

    def one(key_data):
        return jax.random.normal(jax.random.wrap_key_data(key_data, impl=PRNG), (generations, population, dim))

    return jax.jit(jax.vmap(jax.vmap(one)))


def setup_of(config: BBOConfig, plugin: bool, seeds, fns) -> dict:
    """:func:`_setup`'s arrays, from the problem's compiled draws and, for plug-ins, the noise's."""
    out = dict(_problems(config.functions, config.dim, config.init_range)(seeds, fns))
    noise_key = out.pop("noise_key")
    if plugin:
        out["z"] = _noise(config.generations, config.population, config.dim)(noise_key)
    return out


def make_loop(config: BBOConfig, plugin: bool) -> Callable[..., dict]:
    """``loop((init, ask, tell), setup of one seed and function, fn_index, init_std) -> {"best": (G,) best-so-far
    regret, "repairs": ()}``; ``plugin``: the strategy uses the shared noise (plug-ins and sequence models), not
    keys of its own (evosax). Built outside any trace (a neuroevolution task makes its environment here)."""
    f = problems.fitness_fn(config.functions, config.dim)
    G = config.generations

    def loop(strategy, setup, fn_index, init_std):
        init, ask, tell = strategy
        k_loop = jax.random.wrap_key_data(setup["key"], impl=PRNG)
        std0 = jnp.full((config.dim,), init_std, jnp.float32)
        state = init(k_loop, setup["mean0"], std0)
        noise = setup["z"] if plugin else jnp.zeros((G, 0))

        def step(carry, xs):
            state, best = carry
            t, z = xs
            if plugin:
                k_ask = k_tell = k_loop  # plug-ins draw no random numbers of their own
            else:
                k_ask, k_tell = jax.random.split(jax.random.fold_in(k_loop, t))
            pop, state = ask(k_ask, z, state)
            fitness = f(pop, fn_index, setup["inst"])
            fitness = jnp.where(jnp.isfinite(fitness), fitness, jnp.inf)
            best = jnp.minimum(best, jnp.min(fitness))
            state = tell(k_tell, pop, fitness, state, t.astype(jnp.float32) / G)
            return (state, best), best

        (state, _), best = jax.lax.scan(step, (state, jnp.float32(jnp.inf)), (jnp.arange(G), noise))
        return {"best": best, "repairs": state["repairs"]}

    return loop


def make_run(candidate: Any, config: BBOConfig) -> Callable[..., dict]:
    """``run(setup of one seed and function, fn_index, init_std=config.init_std) -> {"best": (G,) best-so-far
    regret, "repairs": ()}`` of one candidate (:func:`make_loop`); ``init_std`` may be traced."""
    loop = make_loop(config, not isinstance(candidate, EvosaxSpec))
    strategy = strategy_of(candidate, config.population, config.dim)

    def run(setup, fn_index, init_std=config.init_std):
        return loop(strategy, setup, fn_index, init_std)

    return run


@functools.lru_cache(maxsize=128)
def compiled(candidate: Any, config: BBOConfig) -> Callable:
    """jit(vmap over seeds (vmap over functions)) of one (strategy, configuration), ``init_std`` static (the
    benchmark's program; units and populations run :func:`population_program`)."""
    run = make_run(candidate, config)
    return jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, 0)), in_axes=(0, None)))


# ---- populations: members of one program with per-member values -----------------------------------------------

TRACED = ("init_std",)  # configuration fields that are per-member (traced) values of one program


@dataclasses.dataclass(frozen=True)
class Program:
    """What one compiled program runs, its members' traced values aside: ``key`` (hashable) names it, ``bind``
    turns a member's constants (a (K,) array) into the candidate the loop runs."""

    key: Any
    bind: Callable[[jax.Array], Any] = dataclasses.field(compare=False, repr=False)
    plugin: bool = True  # a stateless plug-in or sequence model (the shared noise), not an evosax strategy


def program_of(candidate: Any) -> tuple[Program, tuple[float, ...]]:
    """(the program, the member's constants) of a loaded candidate: a rule of the family (:func:`rules.lift`) runs
    in its structure's program with its float literals as constants; an evosax strategy or a sequence model in
    its own (by its options), other plug-in source in its text's own (no constants)."""
    if isinstance(candidate, EvosaxSpec) or hasattr(candidate, "strategy"):
        return Program(candidate, lambda _: candidate, not isinstance(candidate, EvosaxSpec)), ()
    source = getattr(candidate, "__plugin_source__", None)
    if isinstance(source, str):
        if (lifted := rules.lift(source)) is not None:
            update = rules.lifted_update(lifted[0])
            return Program(("rule", lifted[0]), lambda k: functools.partial(update, k)), lifted[1]
        return Program(("source", source), lambda _: candidate), ()
    return Program(candidate, lambda _: candidate), ()


def _static(config: BBOConfig) -> BBOConfig:
    """The configuration with its traced fields at one value: the compiled programs' key."""
    return dataclasses.replace(config, init_std=1.0)


@functools.lru_cache(maxsize=128)
def population_program(program: Program, config: BBOConfig) -> Callable:
    """jit(vmap over members (vmap over seeds (vmap over functions))) of one program and configuration, the
    members' constants (C, K) and initial stds (C,) traced: ``(constants, init_std, setup, fns) -> {"best": (C,
    S, F, G), "repairs": (C, S, F)}``; kept, so any values of the same shapes compile nothing."""

    loop = make_loop(config, program.plugin)

    def one(constants, init_std, setup, fns):
        run = functools.partial(loop, strategy_of(program.bind(constants), config.population, config.dim))
        return jax.vmap(jax.vmap(run, in_axes=(0, 0, None)), in_axes=(0, None, None))(setup, fns, init_std)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))


def run_population(program: Program, constants, init_stds, config: BBOConfig, seeds) -> dict[str, np.ndarray]:
    """Best-so-far regret (C, S, F, G) and repairs (C, S, F) of C members of one program (constants (C, K),
    initial stds (C,)) on every seed and function, host arrays, one call (``config.init_std`` is not used)."""
    static = _static(config)
    seeds = np.asarray(seeds, dtype=np.int32)
    fns = np.arange(len(config.functions), dtype=np.int32)
    setup = setup_of(static, program.plugin, seeds, fns)
    constants = np.asarray(constants, dtype=np.float32).reshape(len(init_stds), -1)
    out = population_program(program, static)(constants, np.asarray(init_stds, np.float32), setup, fns)
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def log_regret(best: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(np.asarray(best, dtype=np.float64), FLOOR))


def final(best: np.ndarray) -> np.ndarray:
    """The metric per seed: log10 of the final best regret averaged over functions, from (..., F, G) regrets."""
    return log_regret(best[..., -1]).mean(axis=-1)


def run_seeds(candidate: Any, config: BBOConfig, seeds) -> dict[str, np.ndarray]:
    """Best-so-far regret (S, F, G) and repairs (S, F) of every seed and function, host arrays, one call: the
    candidate as a population of one (:func:`run_population`), so units that differ only in the initial std or
    in a family rule's constants share one compiled program."""
    program, constants = program_of(candidate)
    raw = run_population(program, [constants], [config.init_std], config, seeds)
    return {k: v[0] for k, v in raw.items()}


def unit_result(raw: dict[str, np.ndarray], config: BBOConfig) -> dict:
    """The template contract's unit result from :func:`run_seeds`' arrays."""
    logs = log_regret(raw["best"])  # (S, F, G)
    return {
        "x": np.arange(1, config.generations + 1),
        "curve": logs.mean(axis=1),
        "final": final(raw["best"]),
        "per_function": logs[:, :, -1],
        "repairs": raw["repairs"].astype(np.float64),
    }


# ---- gate and probe ---------------------------------------------------------------------------------------------

PROBE_P, PROBE_D = 12, 6
PROBE_PROGRESS = (0.0, 0.5, 1.0, 0.0, 0.5, 1.0)


@functools.lru_cache(maxsize=4)
def _probe_inputs(population: int = PROBE_P, dim: int = PROBE_D, seed: int = 7) -> tuple[np.ndarray, ...]:
    """Fixed synthetic generations (numpy, so building them compiles nothing): populations around a mean on
    random ellipsoids, one per progress point, stacked."""
    rng = np.random.default_rng(seed)
    n = len(PROBE_PROGRESS)
    mean = rng.normal(size=(n, dim))
    std = np.exp(0.5 * rng.normal(size=(n, dim)))
    pop = mean[:, None] + std[:, None] * rng.normal(size=(n, population, dim))
    scales = np.exp(rng.normal(size=(n, 1, dim)))
    fitness = np.sum(scales * np.square(pop - 0.5), axis=2)
    f32 = np.float32
    return pop.astype(f32), fitness.astype(f32), mean.astype(f32), std.astype(f32), np.asarray(PROBE_PROGRESS, f32)


def _step(candidate: Any, pop, fitness, mean, std, progress):
    """One update of a candidate from the distribution (mean, std) that produced ``pop``: (mean', std') (a
    sequence model from an empty window: its first generation)."""
    if hasattr(candidate, "strategy"):
        init, _, tell = candidate.strategy(pop.shape[0], pop.shape[1])
        state = tell(None, pop, fitness, init(None, mean, std), progress)
        return state["mean"], state["std"]
    if isinstance(candidate, EvosaxSpec):
        init, _, tell = evosax_strategy(candidate, pop.shape[0], pop.shape[1])
        state = init(jax.random.key(0, impl=PRNG), mean, std)
        es = tell(jax.random.key(1, impl=PRNG), pop, fitness, state, progress)["es"]
        return es.mean, getattr(es, "std", std) * jnp.ones_like(std)
    new_mean, new_std = candidate(pop, fitness, mean, std, progress)
    return jnp.asarray(new_mean), jnp.broadcast_to(jnp.asarray(new_std), std.shape)


def probe(candidate: Any) -> np.ndarray:
    """Behaviour: the mean step in units of std and the log std ratio on fixed synthetic generations, flattened
    (one compiled call for all of them)."""
    pop, fitness, mean, std, progress = _probe_inputs()
    new_mean, new_std = jax.jit(jax.vmap(functools.partial(_step, candidate)))(pop, fitness, mean, std, progress)
    new_mean, new_std = np.asarray(new_mean, np.float64), np.asarray(new_std, np.float64)
    out = np.concatenate([((new_mean - mean) / std).reshape(-1),
                          np.log(np.maximum(new_std, 1e-30) / std).reshape(-1)])
    return np.clip(np.nan_to_num(out, nan=50.0, posinf=50.0, neginf=-50.0), -50.0, 50.0)


def check(candidate: Any, key: jax.Array) -> list[str]:
    """Problems of an update rule on random generations: shapes, finiteness, std > 0, determinism, jit and vmap,
    other sizes, equal fitness. Three small compiles."""
    if isinstance(candidate, (EvosaxSpec, evotf.EvoTF)):
        return []  # a named evosax strategy with checked options or the shipped model: no untrusted code
    problems_: list[str] = []
    P, D = 16, 5
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**30)))
    mean = rng.normal(size=D).astype(np.float32)
    std = np.exp(0.3 * rng.normal(size=D)).astype(np.float32)
    pop = (mean + std * rng.normal(size=(P, D))).astype(np.float32)
    fitness = (np.sum(np.square(pop), axis=1) + 0.1 * rng.normal(size=P)).astype(np.float32)
    progress = np.float32(0.3)
    fn = jax.jit(candidate)
    out = fn(pop, fitness, mean, std, progress)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return [f"must return a pair (mean, std), got {type(out).__name__}"]
    new_mean, new_std = (np.asarray(o) for o in out)
    if new_mean.shape != (D,):
        problems_.append(f"returned mean of shape {tuple(new_mean.shape)}, expected ({D},) (the shape of mean)")
    if new_std.shape not in ((D,), ()):
        problems_.append(f"returned std of shape {tuple(new_std.shape)}, expected ({D},) or a scalar")
    if problems_:
        return problems_
    if not (np.all(np.isfinite(new_mean)) and np.all(np.isfinite(new_std))):
        return ["returned non-finite mean or std on ordinary inputs"]
    if float(np.min(new_std)) <= 0.0:
        problems_.append(f"returned std <= 0 (min {float(np.min(new_std)):.3g}); std must be positive")
    again = fn(pop, fitness, mean, std, progress)
    if not (np.array_equal(new_mean, np.asarray(again[0])) and np.array_equal(new_std, np.asarray(again[1]))):
        problems_.append("not deterministic: two calls on the same inputs differ")
    flat = fn(pop, np.zeros(P, np.float32), mean, std, np.float32(0.0))
    if not (np.all(np.isfinite(np.asarray(flat[0]))) and np.all(np.isfinite(np.asarray(flat[1])))):
        problems_.append("returns non-finite values when all fitness values are equal")
    batched = jax.jit(jax.vmap(candidate, in_axes=(0, 0, None, None, None)))(
        np.stack([pop, pop]), np.stack([fitness, fitness]), mean, std, progress)
    if np.asarray(batched[0]).shape != (2, D):
        problems_.append("does not vmap over populations (the kernel vmaps seeds and functions)")
    other = fn(pop[:8, :3], fitness[:8], mean[:3], std[:3], np.float32(1.0))
    if np.asarray(other[0]).shape != (3,) or not np.all(np.isfinite(np.asarray(other[0]))):
        problems_.append("fails on another population size and dimension (8 x 3): it must not fix P or D")
    return problems_
