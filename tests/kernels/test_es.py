"""ES meta-training loop (jaxlib_kernels.es.meta): one compile per search, determinism, resume, strategies by name."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels.es import meta
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.registry import UnknownNameError

TARGET = jnp.linspace(-1.0, 1.0, 6)
MEAN = {"w": jnp.zeros(4), "b": jnp.zeros(2)}


def quadratic_return(key, candidate):
    """A trivial problem: return = -||x - target||^2 (maximum 0)."""
    x = jnp.concatenate([candidate["w"], candidate["b"]])
    return -jnp.sum((x - TARGET) ** 2)


def counting(fitness_fn):
    """Wrap a fitness so every Python trace of it increments ``wrapped.traces``."""

    def wrapped(key, candidate):
        wrapped.traces += 1
        return fitness_fn(key, candidate)

    wrapped.traces = 0
    return wrapped


def run(seed: int, generations: int, config: meta.ESConfig | None = None, **kwargs) -> dict:
    config = config or meta.ESConfig(population_size=8, std=0.3, lr=0.1)
    return meta.meta_train(jax.random.key(seed), quadratic_return, MEAN, config, generations, **kwargs)


def test_population_is_evaluated_by_one_compiled_call():
    config = meta.ESConfig(population_size=8, std=0.3, lr=0.1)
    strategy, es_params = meta.make_strategy(config, MEAN)
    fitness = counting(quadratic_return)
    step = meta.make_meta_step(strategy, fitness)
    state = meta.canonical_state(meta.init_state(jax.random.key(0), strategy, es_params, MEAN))
    state, _ = step(jax.random.key(1), state, es_params)  # the one trace and compile
    with count_compilations() as counter:
        for generation in range(2, 6):
            state, metrics = step(jax.random.key(generation), state, es_params)
        jax.block_until_ready(metrics)
    assert fitness.traces == 1  # traced once, for the whole population (one vmap), reused by every generation
    assert counter.compiles == 0


def test_backend_compile_counter_sees_compiles():
    constant = float(np.random.default_rng().random())  # a program no compilation cache has seen
    with count_compilations() as counter:
        jax.jit(lambda x: x * constant + 1.0)(jnp.ones(7)).block_until_ready()
    assert counter.compiles >= 1


def test_run_meta_traces_the_fitness_once():
    fitness = counting(quadratic_return)
    config = meta.ESConfig(population_size=8, std=0.3, lr=0.1)
    strategy, es_params = meta.make_strategy(config, MEAN)
    meta.run_meta(jax.random.key(0), strategy, es_params, fitness, MEAN, generations=5)
    assert fitness.traces == 1


@pytest.mark.parametrize("name", ["Open_ES", "SNES"])
def test_fitness_improves_on_a_quadratic(name):
    shaping = "centered_rank" if name == "Open_ES" else None  # None: the strategy's own (SNES: rank weights)
    config = meta.ESConfig(strategy=name, population_size=16, std=0.3, lr=0.1, fitness_shaping=shaping)
    out = run(0, 25, config)
    returns = out["metrics"]["return_mean"]
    assert returns.shape == (25,)
    assert returns[-5:].mean() > returns[:3].mean() + 1.0
    assert out["best_return"] > -0.5
    assert np.allclose(out["best_return"], out["metrics"]["best_return"][-1])
    # the search mean moved towards the target
    mean = np.concatenate([out["mean"]["w"], out["mean"]["b"]])
    assert np.sum((mean - np.asarray(TARGET)) ** 2) < 0.5 * float(jnp.sum(TARGET**2))


def test_population_based_strategy_by_name():
    config = meta.ESConfig(strategy="SimpleGA", population_size=16, std=0.3, fitness_shaping=None)
    out = run(0, 10, config)
    assert np.all(np.isfinite(out["metrics"]["return_mean"]))
    assert out["best_return"] >= out["metrics"]["return_max"][0]


def test_openes_is_antithetic_with_centred_ranks():
    strategy, es_params = meta.make_strategy(meta.ESConfig(population_size=8, std=0.5), MEAN)
    assert strategy.use_antithetic_sampling
    assert strategy.fitness_shaping_fn is meta.FITNESS_SHAPING["centered_rank"]
    state = meta.init_state(jax.random.key(0), strategy, es_params, MEAN)
    population, _ = strategy.ask(jax.random.key(1), state, es_params)
    flat = jax.vmap(lambda c: jax.flatten_util.ravel_pytree(c)[0])(population)
    np.testing.assert_allclose(flat[:4], -flat[4:], atol=1e-6)  # mean is zero: mirrored pairs


def test_returns_are_negated_once():
    assert float(meta.evosax_fitness(jnp.float32(3.0))) == -3.0
    out = run(0, 3)
    # evosax keeps its minimised fitness; the results are returns again
    assert out["best_return"] == pytest.approx(float(out["metrics"]["return_max"].max()))
    assert float(out["state"].best_fitness) == pytest.approx(-out["best_return"])


def test_same_key_same_result_and_different_seeds_differ():
    a, b, c = run(3, 4), run(3, 4), run(4, 4)
    for name in a["metrics"]:
        np.testing.assert_array_equal(a["metrics"][name], b["metrics"][name])
    np.testing.assert_array_equal(a["mean"]["w"], b["mean"]["w"])
    assert not np.array_equal(a["mean"]["w"], c["mean"]["w"])
    assert not np.array_equal(a["metrics"]["return_mean"], c["metrics"]["return_mean"])


@pytest.mark.parametrize("name", ["OpenES", "open_es", "CMAES"])
def test_unknown_strategy_suggests_close_matches(name):
    with pytest.raises(UnknownNameError) as info:
        meta.ESConfig(strategy=name)
    message = str(info.value)
    assert "unknown evolution strategy" in message
    assert "did you mean" in message
    assert ("Open_ES" in message) or ("CMA_ES" in message)


def test_unknown_fitness_shaping_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="centered_rank"):
        meta.ESConfig(fitness_shaping="centred_rank")


def test_every_registered_strategy_name_is_an_evosax_class():
    assert "Open_ES" in meta.STRATEGIES and "SNES" in meta.STRATEGIES and "SimpleGA" in meta.STRATEGIES
    for name, cls in meta.STRATEGIES.items():
        assert callable(cls), name


def test_checkpoint_and_resume_equals_uninterrupted(tmp_path):
    full = run(7, 6)
    folder = tmp_path / "ckpt"
    first = run(7, 4, checkpoint_dir=folder, checkpoint_every=2)
    assert first["resumed_from"] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["gen_000002.npz", "gen_000004.npz"]
    assert meta.latest_checkpoint(folder).name == "gen_000004.npz"
    resumed = run(7, 6, checkpoint_dir=folder, checkpoint_every=2)
    assert resumed["resumed_from"] == 4
    assert resumed["generation"] == 6
    for a, b in zip(jax.tree_util.tree_leaves(full["state"]), jax.tree_util.tree_leaves(resumed["state"])):
        np.testing.assert_array_equal(a, b)
    for name in full["metrics"]:
        np.testing.assert_array_equal(full["metrics"][name], resumed["metrics"][name])
    # a finished run resumes to itself without stepping
    again = run(7, 6, checkpoint_dir=folder)
    assert again["resumed_from"] == 6
    np.testing.assert_array_equal(again["mean"]["w"], full["mean"]["w"])


def test_checkpoint_of_another_search_is_refused(tmp_path):
    run(0, 2, checkpoint_dir=tmp_path, checkpoint_every=1)
    other = {"w": jnp.zeros(5)}
    with pytest.raises(ValueError, match="does not match"):
        meta.meta_train(jax.random.key(0), lambda k, c: -jnp.sum(c["w"] ** 2), other,
                        meta.ESConfig(population_size=8), 3, checkpoint_dir=tmp_path)


def test_ask_tell_outside_one_jit_equals_the_meta_step():
    """The flow's path (ask, evaluate elsewhere, tell) gives exactly the generations of ``make_meta_step``."""
    config = meta.ESConfig(population_size=8, std=0.3, lr=0.1)
    strategy, es_params = meta.make_strategy(config, MEAN)
    step = meta.make_meta_step(strategy, quadratic_return)
    ask, tell = meta.make_ask_tell(strategy)
    evaluate = jax.jit(meta.make_population_eval(quadratic_return))
    a = b = meta.canonical_state(meta.init_state(jax.random.key(0), strategy, es_params, MEAN))
    for generation in range(3):
        key = jax.random.key(10 + generation)
        a, metrics_a = step(key, a, es_params)
        ask_key, eval_key, tell_key = jax.random.split(key, 3)
        population, b = ask(ask_key, b, es_params)
        b, metrics_b = tell(tell_key, population, evaluate(eval_key, population), b, es_params)
        for name in metrics_a:
            np.testing.assert_allclose(np.asarray(metrics_a[name]), np.asarray(metrics_b[name]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(a.mean), np.asarray(b.mean), rtol=1e-6)


@pytest.mark.parametrize("given, name", [("OpenES", "Open_ES"), ("open_es", "Open_ES"), ("cma-es", "CMA_ES"),
                                         ("SNES", "SNES")])
def test_resolve_strategy_accepts_spellings(given, name):
    assert meta.resolve_strategy(given) == name


def test_resolve_strategy_refuses_with_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'Open_ES'"):
        meta.resolve_strategy("OpenEZ")


def test_the_driver_with_evaluation_elsewhere_equals_run_meta(tmp_path):
    """``drive`` over ask / evaluate / tell (the chunked Ray search's path), resumed half-way from a checkpoint,
    gives run_meta's search; the evaluation backend sees whole populations."""
    config = meta.ESConfig(population_size=8, std=0.3, lr=0.1)
    strategy, es_params = meta.make_strategy(config, MEAN)
    full = meta.run_meta(jax.random.key(4), strategy, es_params, quadratic_return, MEAN, 4)
    ask, tell = meta.make_ask_tell(strategy)
    evaluate = jax.jit(meta.make_population_eval(quadratic_return))
    sizes = []

    def backend(key, population):
        sizes.append(jax.tree_util.tree_leaves(population)[0].shape[0])
        return np.asarray(evaluate(key, population))

    init_key, loop_key = jax.random.split(jax.random.key(4))
    state = meta.canonical_state(meta.init_state(init_key, strategy, es_params, MEAN))
    step = meta.ask_tell_step(ask, backend, tell)
    state, history = meta.drive(step, state, es_params, 0, 2, lambda g: jax.random.fold_in(loop_key, g),
                                checkpoint=lambda g, s, h: meta.save_checkpoint(tmp_path, g, s, h))
    _, state, history = meta.load_checkpoint(meta.checkpoint_path(tmp_path, 2), state)
    state, history = meta.drive(step, state, es_params, 2, 4, lambda g: jax.random.fold_in(loop_key, g), history)
    assert sizes == [8, 8, 8, 8]
    for name in ("return_mean", "return_max", "best_return"):
        np.testing.assert_allclose(np.asarray(history[name]), full["metrics"][name], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(meta.search_mean(strategy, state)["w"]), full["mean"]["w"], rtol=1e-5)


@pytest.mark.parametrize("name", ["lpo", "hades"])
def test_a_meta_template_declares_its_problem_and_searches(name, tmp_path):
    """``Template.meta``: the spec defaults, the ES defaults, the searches of a request, and a candidate that
    saves and loads back into its declared shape."""
    from jaxlib_kernels.es import problems
    from jaxlib_kernels.templates import make, meta_templates

    assert name in meta_templates()
    declared = make(name).meta
    specs = declared.searches({"seed": 3, "options": {}, "dataset_sizes": [2, 8]})
    assert specs and all(s["template"] == name and s["seed"] == 3 for s in specs.values())
    assert all(s == problems.problem_spec(name, **{k: v for k, v in s.items() if k != "template"})
               for s in specs.values())
    assert set(declared.es_defaults) <= set(problems.es_spec(name, "OpenES", 8))
    spec = next(iter(specs.values()))
    candidate = declared.like(spec)
    meta.save_candidate(tmp_path / "search_mean.npz", candidate)
    back = meta.load_candidate(tmp_path, declared.like(spec))
    for x, y in zip(jax.tree_util.tree_leaves(candidate), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert (declared.idea is None) != (declared.evaluate is None)
    with pytest.raises(ValueError, match="unknown"):
        problems.problem_spec(name, no_such_option=1)


def test_a_template_without_meta_is_refused_with_those_that_have_one():
    from jaxlib_kernels.es import problems

    with pytest.raises(ValueError, match="scientist meta serves lpo, hades"):
        problems.problem_spec("bbo")
