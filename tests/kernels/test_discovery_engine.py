"""The discovery engine's generation step with a stand-in fitness: fixed shapes, gate, novelty, halving, determinism."""

import json

import numpy as np

from jaxlib_kernels import discovery, interpreter, symbolic
from jaxlib_kernels.search import drift as search
from jaxlib_kernels.search import trees
from jaxlib_kernels.search.drift import EXPRESSIONS, PPO_CLIP
from jaxlib_kernels.templates.base import Metric

DRIFT = search.LANGUAGE
CLOSE = Metric("fitness", "a stand-in fitness", maximize=True)


def _fitness(calls):
    target = search.behaviour(PPO_CLIP)

    def evaluate(exprs, rung):
        calls.append((len(exprs), rung))
        for e in exprs:
            interpreter.encode(e, 64)  # every member fits the population's program length
        return np.array([-abs(search.distance(search.behaviour(e), target) - 0.5) for e in exprs])

    return evaluate


def _run(config, generations, calls):
    state = discovery.init_state(EXPRESSIONS, config, DRIFT)
    for _ in range(generations):
        state = discovery.generation(state, config, _fitness(calls), seed=3, language=DRIFT, metric=CLOSE)
    return state


def test_generations_have_fixed_shapes_are_novel_and_deterministic():
    config = discovery.SearchConfig(population=8, promote=2, tune=2)
    calls = []
    state = _run(config, 4, calls)
    # one shape per rung for the whole search: a population of 8 at rung 0, 2 promoted members at rung 1
    assert set(calls) == {(8, 0), (2, 1)}
    rows = state["archive"]
    non_migrants = [r for r in rows if not r["origin"].endswith("+migrant")]
    keys = [symbolic.dumps(r["expr"]) for r in non_migrants]
    assert len(keys) == len(set(keys))  # no formula trained twice
    behaviours = [search.behaviour(r["expr"]) for r in non_migrants]
    close = [search.distance(a, b) for i, a in enumerate(behaviours) for b in behaviours[:i]]
    assert min(close) >= config.novelty  # duplicates were rejected before evaluation
    assert any(r["origin"].endswith("+evosax") for r in rows)  # evosax-tuned constants joined the population
    assert sum(r["fitness_long"] is not None for r in non_migrants) == 2 * 4  # successive halving: 2 promoted a generation
    assert {r["island"] for r in rows} == {0, 1}
    assert all(discovery.gate(r["expr"], config, DRIFT) is None for r in rows)
    again = _run(config, 4, [])
    assert json.dumps(again, sort_keys=True) == json.dumps(state, sort_keys=True)
    assert state["log"][-1]["best_fitness"] >= state["log"][0]["best_fitness"]


def test_the_static_gate_refuses_negative_and_oversized_formulas():
    config = discovery.SearchConfig()
    assert discovery.gate(["neg", ["sq", "logr"]], config, DRIFT)  # negative drift
    assert discovery.gate(["add", "r", "x"], config, DRIFT)  # unknown variable
    big = "r"
    for _ in range(30):
        big = ["add", ["sq", "logr"], big]
    assert discovery.gate(big, config, DRIFT)
    assert discovery.gate(PPO_CLIP, config, DRIFT) is None


def test_local_variations_never_grow_a_formula_and_keep_it_well_formed():
    rng = np.random.default_rng(0)
    config = discovery.SearchConfig()
    seen = {"perturb": 0, "hoist": 0}
    for expr in EXPRESSIONS.values():
        for _ in range(50):
            varied, kind = discovery._vary(expr, rng, scale=float(rng.uniform(0.1, 2.0)))
            if varied is None:
                continue
            seen[kind] += 1
            symbolic.validate(varied)
            assert symbolic.size(varied) <= symbolic.size(expr), (expr, varied)
            for _, node in trees.paths(varied):
                if isinstance(node, list) and node[0] == "clip":
                    assert node[2] < node[3]
            assert interpreter.encode(varied, config.length) is not None
    assert seen["perturb"] > 0 and seen["hoist"] > 0


def test_the_population_stays_full_when_the_neighbourhood_of_the_elites_is_archived():
    """Proposals widen (larger constant steps) while their near neighbourhood is already archived, so a generation
    does not fall back to padding its population with copies (seen in a 35-minute lpo search: 4 of 16 trained)."""
    config = discovery.SearchConfig(population=16, promote=4, tune=4)  # the CLI's default sizes
    state = _run(config, 16, [])  # without the widening variations, generations 10, 11 and 15 trained no new formula
    # every slot not taken by an evosax member holds a new formula (refused evosax members are not replaced)
    assert [e["trained"] - e["tuned"] for e in state["log"][1:]] == [
        config.population - e["tune_asked"] for e in state["log"][1:]], state["log"]
    assert all(discovery.gate(r["expr"], config, DRIFT) is None for r in state["archive"])


def test_a_minimised_metric_ranks_the_lower_fitness_first():
    """The engine ranks through the metric: with a minimised metric the formula of lower fitness leads the archive,
    is promoted to the long rung, is ``best``, and the tuned baseline is the one of lower fitness."""
    target = search.behaviour(PPO_CLIP)

    def distance_to_clip(exprs, rung):  # lower is better under the minimised metric: PPO clip itself is the best
        return np.array([search.distance(search.behaviour(e), target) for e in exprs])

    config = discovery.SearchConfig(population=8, promote=2, tune=2)
    lower = Metric("distance", "a distance to PPO clip", maximize=False)
    state = discovery.init_state(EXPRESSIONS, config, DRIFT)
    for _ in range(3):
        state = discovery.generation(state, config, distance_to_clip, seed=3, language=DRIFT, metric=lower)
    first = [r for r in state["archive"] if r["generation"] == 0]
    promoted = [r for r in first if r["fitness_long"] is not None]
    assert max(r["fitness"] for r in promoted) <= min(r["fitness"] for r in first if r["fitness_long"] is None)
    [top] = discovery.best(state, 1)
    assert top["fitness_long"] == min(r["fitness_long"] for r in state["archive"] if r["fitness_long"] is not None)
    assert symbolic.dumps(top["expr"]) == symbolic.dumps(PPO_CLIP) and top["fitness_long"] == 0.0
    assert state["log"][-1]["best_fitness_long"] == 0.0
    # the same search maximising the distance ranks the other way round
    higher = discovery.init_state(EXPRESSIONS, config, DRIFT)
    higher = discovery.generation(higher, config, distance_to_clip, seed=3, language=DRIFT, metric=CLOSE)
    assert symbolic.dumps(discovery.best(higher, 1)[0]["expr"]) != symbolic.dumps(PPO_CLIP)
    # baseline tuning keeps the baseline's lowest fitness seen
    tuned = discovery.tune_baselines({"kl": EXPRESSIONS["kl"]}, config, distance_to_clip, 2, 0, DRIFT, lower)["kl"]
    assert tuned["fitness"] <= tuned["start_fitness"]

