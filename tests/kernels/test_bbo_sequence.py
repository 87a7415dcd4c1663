"""The bbo template's sequence-optimiser interface (sequence.py), its mixed search space (space.py) and the PPO
hyperparameter problem (hparams.py): decoding is always valid, the loop repairs bad answers, the Evolution
Transformer's adapter keeps the window the model would keep and compiles once, the baselines improve on a cheap
mixed objective, and PPO's traced learning rate and drift are honoured."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.templates.bbo import evotf, hparams, sequence
from jaxlib_kernels.templates.bbo.space import Categorical, Continuous, Integer, Space, SpaceError

SPACE = Space([Continuous("x0", -2.0, 2.0), Continuous("x1", -2.0, 2.0), Continuous("lr", 1e-3, 1.0, log=True),
               Integer("k", 0, 7), Categorical("c", ("a", "b", "c"))])


def mixed_objective(configs: list[dict]) -> np.ndarray:
    """A sphere in the continuous dimensions (optimum x0 0.7, x1 -0.4, lr 0.05) plus penalties for the wrong
    integer (k 5) and the wrong category (b): 0 at the optimum."""
    return np.asarray([(c["x0"] - 0.7) ** 2 + (c["x1"] + 0.4) ** 2 + (math.log10(c["lr"]) - math.log10(0.05)) ** 2
                       + 0.25 * abs(c["k"] - 5) + (c["c"] != "b") for c in configs])


def test_decoding_any_latent_vector_gives_a_valid_configuration():
    rng = np.random.default_rng(0)
    latents = [rng.normal(scale=s, size=SPACE.dim) for s in (0.1, 1.0, 10.0, 1e30) for _ in range(50)]
    specials = [np.full(SPACE.dim, np.nan), np.full(SPACE.dim, np.inf), np.full(SPACE.dim, -np.inf),
                np.array([np.nan, np.inf, -np.inf, np.nan, np.nan, -np.inf, np.inf]),
                np.array([1e308, -1e308, 0.0, -0.0, 5e-324, -np.inf, -np.inf])]
    for z in latents + specials:
        config = SPACE.decode(z)
        assert SPACE.valid(config), (z, config)
    # the fallbacks: NaN reads as the centre of the range, infinities as its ends, a categorical skips NaN entries
    # and takes its first choice when all of them are NaN
    assert SPACE.decode(specials[0]) == {"x0": 0.0, "x1": 0.0, "lr": pytest.approx(10 ** -1.5), "k": 4, "c": "a"}
    assert SPACE.decode(specials[1]) == {"x0": 2.0, "x1": 2.0, "lr": 1.0, "k": 7, "c": "a"}
    assert SPACE.decode(specials[2]) == {"x0": -2.0, "x1": -2.0, "lr": 1e-3, "k": 0, "c": "a"}
    assert SPACE.decode(specials[3]) == {"x0": 0.0, "x1": 2.0, "lr": 1e-3, "k": 4, "c": "c"}
    assert SPACE.decode(specials[4]) == {"x0": 2.0, "x1": -2.0, "lr": pytest.approx(10 ** -1.5), "k": 4, "c": "a"}
    assert SPACE.decode_many(np.stack(latents[:7])) == [SPACE.decode(z) for z in latents[:7]]
    with pytest.raises(SpaceError):
        SPACE.decode(np.zeros(SPACE.dim + 1))


def test_encode_decode_round_trip_and_refusals():
    rng = np.random.default_rng(1)
    for _ in range(200):
        config = {"x0": float(rng.uniform(-2, 2)), "x1": float(rng.uniform(-2, 2)),
                  "lr": float(np.exp(rng.uniform(np.log(1e-3), 0.0))), "k": int(rng.integers(0, 8)),
                  "c": str(rng.choice(["a", "b", "c"]))}
        z = SPACE.encode(config)
        assert z.shape == (SPACE.dim,) and np.all(np.abs(z) <= 1.0 + 1e-12)
        back = SPACE.decode(z)
        assert back["k"] == config["k"] and back["c"] == config["c"]
        for name in ("x0", "x1", "lr"):
            assert back[name] == pytest.approx(config[name], rel=1e-9, abs=1e-12)
    assert SPACE.decode(SPACE.encode({"x0": 2.0, "x1": -2.0, "lr": 1.0, "k": 0, "c": "c"}))["lr"] == 1.0
    for bad in ({"x0": 3.0, "x1": 0.0, "lr": 0.1, "k": 1, "c": "a"}, {"x0": 0.0, "x1": 0.0, "lr": 0.1, "k": 1.5,
                "c": "a"}, {"x0": 0.0, "x1": 0.0, "lr": 0.1, "k": 1, "c": "z"}, {"x0": 0.0}):
        with pytest.raises(SpaceError):
            SPACE.encode(bad)
    for make in (lambda: Continuous("a", 1.0, 1.0), lambda: Continuous("a", 0.0, 1.0, log=True),
                 lambda: Integer("a", 3, 2), lambda: Categorical("a", ()), lambda: Categorical("a", ("x", "x")),
                 lambda: Space([Integer("a", 0, 1), Integer("a", 0, 2)])):
        with pytest.raises(SpaceError):
            make()


def test_integers_get_bins_of_equal_width_and_choices_are_alike_at_the_centre():
    k = Integer("k", 2, 5)
    grid = np.linspace(-1, 1, 4001)[:-1]
    counts = np.bincount([k.decode(np.array([z])) - 2 for z in grid])
    assert counts.tolist() == [1000] * 4
    c = Categorical("c", ("a", "b", "c"))
    rng = np.random.default_rng(2)
    picks = [c.decode(z) for z in rng.normal(scale=0.5, size=(3000, 3))]
    shares = np.asarray([picks.count(x) for x in "abc"]) / 3000
    assert np.all(np.abs(shares - 1 / 3) < 0.04)


class _Broken:
    """Answers a NaN mean, then a mean of the wrong shape with a negative std, then nothing usable at all."""

    def next_distribution(self, history, best_x, generation, progress):
        dim = best_x.shape[0]
        return [(np.full(dim, np.nan), np.ones(dim)), (np.zeros(dim + 2), -np.ones(dim)), None][generation % 3]


def test_minimise_repairs_unusable_distributions_and_non_finite_fitness():
    calls = []

    def fitness(configs):
        calls.append(configs)
        out = mixed_objective(configs)
        out[0] = np.nan  # a member whose evaluation failed
        return out

    res = sequence.minimise(_Broken(), fitness, SPACE, generations=4, population=6, seed=3)
    assert [g for g, _ in res["repairs"]] == [0, 1, 2, 3]
    assert "non-finite mean" in res["repairs"][0][1] and "expected" in res["repairs"][1][1]
    assert "non-positive std" in res["repairs"][1][1]
    assert all(SPACE.valid(c) for gen in calls for c in gen)
    assert all(np.isinf(fit[0]) for _, fit in res["history"])
    assert np.all(np.diff(res["best"]) <= 0) and SPACE.valid(res["best_config"])
    assert res["best_fitness"] == pytest.approx(float(mixed_objective([res["best_config"]])[0]))
    assert isinstance(sequence.RandomSearch(), sequence.SequenceOptimiser)


def test_the_baselines_improve_on_a_mixed_objective_through_the_same_loop():
    runs = {name: sequence.minimise(make(), mixed_objective, SPACE, generations=15, population=12, seed=0)
            for name, make in (("random_search", sequence.RandomSearch), ("snes", sequence.SNES))}
    for name, res in runs.items():
        assert res["best"][-1] < float(res["history"][0][1].min()), name  # better than the first generation
        assert res["best"].shape == (15,) and np.all(np.diff(res["best"]) <= 0)
        assert res["best_fitness"] == res["best"][-1] == float(mixed_objective([res["best_config"]])[0])
    # the same seed gives both the same first generation: the comparison starts from the same samples
    np.testing.assert_array_equal(runs["snes"]["history"][0][0], runs["random_search"]["history"][0][0])
    rs = runs["random_search"]
    assert np.array_equal(rs["std"], np.full(SPACE.dim, 0.5)) and np.array_equal(rs["mean"], np.zeros(SPACE.dim))
    # SNES closes in on the optimum (0; a wrong category alone costs 1), random search stays further away
    assert runs["snes"]["best"][-1] < 0.1 < rs["best"][-1]


def _model(width=8, window=3, seed=0):
    params = evotf.init_params(jax.random.key(seed), width)
    params["head"]["w"] = 0.5 * jax.random.normal(jax.random.key(seed + 1), params["head"]["w"].shape)
    return evotf.EvoTF(params, window, "random-head")


def test_the_evolution_transformer_adapter_keeps_the_models_window_and_compiles_once():
    model = _model()
    opt = sequence.EvoTFOptimiser(model)
    res = sequence.minimise(opt, mixed_objective, SPACE, generations=6, population=8, seed=4)
    assert all(SPACE.valid(c) for c in SPACE.decode_many(np.concatenate([p for p, _ in res["history"]])))
    # the distributions the adapter gave are those of evotf.step run over the same generations in order
    D, width = SPACE.dim, 8
    window, valid = jnp.zeros((D, model.window, width)), jnp.zeros(model.window, bool)
    mean, std = jnp.zeros(D), jnp.full(D, 0.5)
    for pop, fit in res["history"]:
        np.testing.assert_allclose(pop.mean(0), mean, atol=4 * float(std.max()))
        mean, std, window, valid = evotf.step(model.params, window, valid, jnp.asarray(pop, jnp.float32),
                                              jnp.asarray(fit, jnp.float32), mean.astype(jnp.float32),
                                              std.astype(jnp.float32))
        std = jnp.clip(std, *sequence.STD_RANGE)
    np.testing.assert_allclose(res["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(res["std"], std, rtol=1e-5, atol=1e-6)
    assert not np.allclose(res["mean"], 0.0)  # the random head moved the mean
    # a second run of the same shapes (another optimiser, seed and model of the same sizes) compiles nothing
    with count_compilations() as counter:
        again = sequence.minimise(sequence.EvoTFOptimiser(_model(seed=5)), mixed_objective, SPACE, generations=6,
                                  population=8, seed=5)
    assert counter.compiles == 0
    assert np.all(np.diff(again["best"]) <= 0) and SPACE.valid(again["best_config"])


def test_ppo_hyperparameters_are_traced_and_the_drift_program_is_the_lpo_one():
    from jaxlib_kernels import interpreter, symbolic
    from jaxlib_kernels.templates.lpo.expressions import PPO_CLIP

    assert hparams.ppo_clip(0.2) == PPO_CLIP
    r, a = np.exp(np.linspace(-1, 1, 9)), np.linspace(-2, 2, 9)
    for name, eps in (("ppo_clip", 0.35), ("dpo", 0.2), ("none", 0.1)):
        program = hparams.drift_program(name, eps)
        assert program.ops.shape == (hparams.program_length(),)
        got = np.asarray(interpreter.run(program, jnp.asarray(r), jnp.asarray(a), jnp.float32(0.5)))
        want = np.broadcast_to(symbolic.evaluate_numpy(hparams.drift_expression(name, eps), r, a, np.full(9, 0.5)),
                               (9,))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    space = hparams.space((1, 1))
    problem = hparams.PPOHparams(budget=hparams.TINY_BUDGET, overrides=hparams.TINY, space=space)
    config = {"lr": 1e-2, "clip_eps": 0.2, "update_epochs": 1, "drift": "ppo_clip"}
    trained = problem.train(config)
    init = hparams.ppo.init_params(problem.ppo_config(config), hparams.ppo.seed_keys(list(problem.seeds))[1])
    with count_compilations() as counter:  # another learning rate and drift: the same compiled program
        frozen = problem.train({**config, "lr": 0.0})
        dpo = problem.train({**config, "drift": "dpo"})
        fit = problem([config, {**config, "clip_eps": 0.4}])
    assert counter.compiles == 0
    same = jax.tree.leaves(jax.tree.map(np.array_equal, frozen["state"], jax.tree.map(np.asarray, init)))
    moved = jax.tree.leaves(jax.tree.map(np.array_equal, trained["state"], jax.tree.map(np.asarray, init)))
    assert all(same) and not any(moved)  # lr 0 leaves every weight where it started; lr 0.01 moves them all
    # the drift program is honoured: DPO trains other weights than PPO's clip from the same start
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, dpo["state"], trained["state"])))
    assert fit.shape == (2,) and np.all(np.isfinite(fit)) and np.all(fit <= 0)
    assert problem.evaluations == 5
