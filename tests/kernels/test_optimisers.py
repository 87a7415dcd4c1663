"""The optimiser library (jaxlib_kernels/optimisers): the sequence-optimiser interface (sequence.py) and the mixed
search space (space.py): decoding is always valid, the loop repairs bad answers, the Evolution Transformer's adapter
keeps the window the model would keep and compiles once, the baselines improve on a cheap mixed objective; the
hyperparameter search ``tune`` runs every optimiser by name within its budget, the pretrained model by default."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels import optimisers
from jaxlib_kernels.optimisers import evotf, sequence
from jaxlib_kernels.optimisers.space import Categorical, Continuous, Integer, Space, SpaceError
from jaxlib_kernels.profiling import count_compilations

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
    opt = evotf.EvoTFOptimiser(model)
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
        again = sequence.minimise(evotf.EvoTFOptimiser(_model(seed=5)), mixed_objective, SPACE, generations=6,
                                  population=8, seed=5)
    assert counter.compiles == 0
    assert np.all(np.diff(again["best"]) <= 0) and SPACE.valid(again["best_config"])


def test_tune_runs_every_optimiser_by_name_within_its_budget_the_pretrained_model_by_default():
    runs = {name: [optimisers.tune(SPACE, mixed_objective, 180, name, population=12, seed=seed) for seed in range(3)]
            for name in ("random", "snes", "evotf")}
    assert optimisers.tune(SPACE, mixed_objective, 24, population=12)["optimiser"] == "evotf"  # the default
    for name, results in runs.items():
        for res in results:
            assert res["evaluations"] == 180 and len(res["history"]) == 15 and len(res["curve"]) == 15
            assert all(SPACE.valid(c) and len(g["configs"]) == 12 for g in res["history"] for c in g["configs"])
            assert res["best_fitness"] == min(min(g["fitness"]) for g in res["history"]) == res["curve"][-1]
            assert res["best_fitness"] == float(mixed_objective([res["best_config"]])[0])
            assert np.all(np.diff(res["curve"]) <= 0) and res["optimiser"] == name
    # the same seed, the same first generation, whichever optimiser
    assert runs["snes"][0]["history"][0] == runs["evotf"][0]["history"][0] == runs["random"][0]["history"][0]
    # the EAD-trained Evolution Transformer (trained on BBOB, not on this problem) and SNES beat random search
    mean = {name: np.mean([r["best_fitness"] for r in results]) for name, results in runs.items()}
    assert mean["snes"] < mean["random"] and mean["evotf"] < mean["random"], mean
    # a budget smaller than a generation is one smaller generation; bad names and a missing model are refused
    small = optimisers.tune(SPACE, mixed_objective, 5, "snes", population=12)
    assert small["evaluations"] == 5 and len(small["history"]) == 1
    with pytest.raises(ValueError, match="unknown optimiser"):
        optimisers.tune(SPACE, mixed_objective, 10, "cma")
    with pytest.raises(ValueError, match="budget"):
        optimisers.tune(SPACE, mixed_objective, 0, "snes")
    from jaxlib_kernels.optimisers.evollm import NoModel

    with pytest.raises(NoModel):
        optimisers.tune(SPACE, mixed_objective, 10, "evollm")


def test_the_pretrained_model_loads_as_saved(tmp_path):
    model = evotf.pretrained()
    assert model.window == 8 and model.params["enc2"]["w"].shape == (32, 32)
    assert jax.tree.structure(model.params) == jax.tree.structure(evotf.init_params(jax.random.key(0), 32))
    again = evotf.load(evotf.save(_model(), tmp_path / "m.npz"))
    assert again.window == _model().window and again.name == "random-head"
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, again.params, _model().params)))
