"""HaDES behaviour distillation (jaxlib_kernels.templates.hades): the kernel (envs, cloning, one compile, CartPole
solved) and the template (candidate gate, probe, experiment unit, offline ideation, text)."""

from __future__ import annotations

import dataclasses
import json
import re
import time

import jax
import jax.numpy as jnp
import jinja2
import numpy as np
import pytest

from jaxlib_kernels import envs
from jaxlib_kernels.es import meta
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.registry import UnknownNameError
from jaxlib_kernels.templates import hades, make
from jaxlib_kernels.templates.base import Setting, candidate_json
from jaxlib_kernels.templates.hades import candidate as cand
from jaxlib_kernels.templates.hades import search

SMALL = hades.HadesConfig(num_pairs=4, width=8, eval_episodes=1)


def test_cartpole_adapter_follows_gymnax_1_api():
    env = hades.make_env("CartPole-v1")  # the environment protocol of jaxlib_kernels.envs
    assert isinstance(env, envs.Env)
    assert (env.obs_size, env.num_actions, env.max_steps) == (4, 2, 500)
    obs, state = env.reset(jax.random.key(0), env.default_params)
    obs, state, reward, terminated, truncated, _ = env.step(jax.random.key(1), state, jnp.int32(1), env.default_params)
    assert obs.shape == (4,) and obs.dtype == jnp.float32
    assert float(reward) == 1.0 and not bool(terminated | truncated)


def test_unknown_env_suggests_close_matches_and_continuous_is_refused():
    with pytest.raises(UnknownNameError, match="CartPole-v1"):
        hades.make_env("CartPole-v2")
    with pytest.raises(ValueError, match="discrete"):
        hades.make_env("Pendulum-v1")


def test_behaviour_cloning_fits_the_dataset():
    env = hades.make_env("CartPole-v1")
    dataset = hades.init_dataset(jax.random.key(0), dataclasses.replace(SMALL, logit_init_std=3.0), env)
    policy = hades.init_policy(jax.random.key(1), env.obs_size, env.num_actions, width=32)
    cloned = jax.jit(hades.behaviour_clone)(policy, dataset)
    np.testing.assert_array_equal(
        np.argmax(hades.policy_logits(cloned, dataset["obs"]), -1), np.argmax(dataset["logits"], -1)
    )


def test_dataset_population_compiles_once_and_is_deterministic():
    mean = hades.initial_candidate(jax.random.key(0), SMALL)
    base = hades.make_fitness(SMALL, "hades_r")
    traces = []

    def fitness(key, dataset):
        traces.append(1)
        return base(key, dataset)

    strategy, es_params = meta.make_strategy(meta.ESConfig(population_size=8, std=0.1, lr=0.05), mean)
    step = meta.make_meta_step(strategy, fitness)
    state0 = meta.canonical_state(meta.init_state(jax.random.key(1), strategy, es_params, mean))

    def generations(seed, n=3):
        state, out = state0, []
        for g in range(n):
            state, metrics = step(jax.random.fold_in(jax.random.key(seed), g), state, es_params)
            out.append(float(metrics["return_mean"]))
        return np.asarray(out)

    a, b, c = generations(0), generations(0), generations(1)
    assert len(traces) == 1
    assert np.all((a >= 1) & (a <= 500))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("method", ["hades_f", "direct"])
def test_other_methods_run(method):
    out = hades.train(jax.random.key(0), SMALL, meta.ESConfig(population_size=4), generations=2, method=method)
    assert out["metrics"]["return_mean"].shape == (2,)
    if method == "direct":
        assert isinstance(out["mean"], list) and out["mean"][0]["w"].shape == (4, 8)
    else:
        assert out["mean"]["obs"].shape == (4, 4) and out["mean"]["logits"].shape == (4, 2)


def test_unknown_method_suggests_close_matches():
    with pytest.raises(ValueError, match="hades_r"):
        hades.make_fitness(SMALL, "hades-r")


@pytest.mark.parametrize("env_name", ["Breakout-MinAtar", "Navix-Empty-5x5-v0"])
def test_minatar_and_navix_fitness(env_name):
    config = hades.HadesConfig(env_name=env_name, max_steps=30, num_pairs=2, width=8, inner_steps=5, eval_episodes=1)
    dataset = hades.initial_candidate(jax.random.key(0), config)
    env = config.make_env()
    assert dataset["obs"].shape == (2, env.obs_size) and dataset["logits"].shape == (2, env.num_actions)
    value = jax.jit(hades.make_fitness(config))(jax.random.key(1), dataset)
    assert value.shape == () and np.isfinite(float(value)) and float(value) >= 0.0


def test_dataset_check_and_transfer():
    dataset = hades.initial_candidate(jax.random.key(0), SMALL)
    env = SMALL.make_env()
    assert hades.check_dataset(dataset, 4, env) == []
    assert "exactly the keys" in hades.check_dataset({"obs": np.zeros((2, 4))})[0]
    assert hades.check_dataset({"obs": np.zeros((3, 4)), "logits": np.zeros((2, 2))})
    assert "expected 5 pairs" in hades.check_dataset(dataset, 5)[0]
    assert "non-finite" in hades.check_dataset({"obs": np.full((2, 4), np.nan), "logits": np.zeros((2, 2))})[0]
    transfer = hades.transfer_returns(jax.random.key(0), dataset, SMALL, widths=(4, 16), num_inits=2)
    assert set(transfer) == {4, 16} and all(1.0 <= v <= 500.0 for v in transfer.values())


# --- the template -------------------------------------------------------------------------------------------------

TINY = Setting("tiny", "CartPole-v1", max_steps=50, description="CartPole-v1, 50 steps (test)",
               options=(("population", 8), ("width", 8), ("search_width", 8), ("eval_episodes", 1)))
TINY_CANDIDATES = {"hades_r": {"method": "hades_r", "es_lr": 0.1, "num_pairs": 2, "inner_steps": 5},
                   "direct": {"method": "direct", "es_lr": 0.1}}


def test_template_is_registered_and_consistent():
    t = make("hades")
    assert t is hades.TEMPLATE and t.plugin.kind == "parametric" and t.metric.maximize
    assert t.budget_unit == "ES generations" and t.schema.extras == ("return_max",)
    for setting in t.settings.values():
        assert setting.env in envs.ENVS
        hades.unit.setting_options(setting)  # known option names only
    assert any(s.held_out and s.option("width") != 64 for s in t.settings.values())  # a held-out width
    assert any(s.held_out and s.env != "CartPole-v1" for s in t.settings.values())  # a held-out environment
    for profile in t.profiles.values():
        assert set(profile.settings) <= set(t.settings) and set(profile.baselines) <= set(t.baselines)
        assert "direct" in profile.baselines
    for name, baseline in t.baselines.items():
        t.static_check(baseline.source)
        assert baseline.source == candidate_json(json.loads(baseline.source))
        assert t.check(t.load(baseline.source), jax.random.key(0)) == [], name
    assert json.loads(t.baselines["direct"].source)["method"] == "direct"
    # the unit key covers the setting's options and the budget
    cartpole, w16 = t.setting("cartpole"), t.setting("cartpole_w16")
    assert t.kernel_config(cartpole, 10).width == 64 and t.kernel_config(w16, 10).width == 16
    assert len({t.kernel_fingerprint(cartpole, 10), t.kernel_fingerprint(w16, 10),
                t.kernel_fingerprint(cartpole, 11)}) == 3
    with pytest.raises(ValueError, match="unknown option"):
        hades.kernel_config(Setting("bad", "CartPole-v1", options=(("populaton", 8),)), 3)


@pytest.mark.parametrize("bad, reason", [
    ([1, 2], "JSON object"),
    ({"num_pairs": 4}, "missing key 'method'"),
    ({"method": "hades"}, "method must be one of"),
    ({"method": "hades_r", "num_pair": 4}, "unknown key(s) ['num_pair']"),
    ({"method": "hades_r", "num_pairs": 0}, "num_pairs must lie in [1, 256]"),
    ({"method": "hades_r", "num_pairs": 2.5}, "num_pairs must be an integer"),
    ({"method": "hades_r", "num_pairs": True}, "num_pairs must be a number"),
    ({"method": "hades_r", "es_lr": "0.1"}, "es_lr must be a number"),
    ({"method": "hades_r", "es_std": float("nan")}, "es_std must lie in"),
    ({"method": "hades_f", "inner_lr": 2.0}, "inner_lr must lie in [0.0001, 0.5]"),
    ({"method": "direct", "num_pairs": 4}, "'num_pairs' does not apply to method 'direct'"),
])
def test_check_rejects_bad_configs_with_reasons(bad, reason):
    problems = hades.check(bad, jax.random.key(0))
    assert problems and any(reason in p for p in problems), problems
    if isinstance(bad, dict) and "method" in bad and bad["method"] in hades.METHODS:
        with pytest.raises(ValueError, match="invalid hades candidate"):
            hades.evaluate(TINY, 1, bad, [0])


def test_check_accepts_valid_configs_and_builds_the_dataset():
    assert hades.check({"method": "hades_r"}, jax.random.key(0)) == []
    assert hades.check({"method": "hades_f", "num_pairs": 16, "es_lr": 0.2, "inner_steps": 10}, None) == []
    assert hades.check({"method": "direct", "es_std": 0.05}, jax.random.key(1)) == []
    t = hades.TEMPLATE
    assert t.load(' {"method": "hades_r", "num_pairs": 8}') == {"method": "hades_r", "num_pairs": 8}
    with pytest.raises(Exception, match="JSON"):
        t.static_check("not json")


def test_probe_calls_trivial_changes_not_novel():
    t = hades.TEMPLATE
    base = {"method": "hades_r", "num_pairs": 4, "es_lr": 0.05}

    def dist(a, b):
        return t.distance(t.probe(a), t.probe(b))

    assert dist(base, {"method": "hades_r"}) == 0.0  # defaults filled
    assert dist(base, {**base, "es_lr": 0.055}) < t.novelty_threshold  # 10 % on one key
    assert dist(base, {**base, "es_lr": 0.06, "es_std": 0.11}) < t.novelty_threshold
    assert dist(base, {**base, "num_pairs": 8}) == pytest.approx(1.0)  # one doubling = 1
    assert dist(base, {**base, "method": "hades_f"}) >= t.novelty_threshold
    assert dist({"method": "direct"}, base) >= t.novelty_threshold
    assert t.probe(base).shape == (cand.PROBE_SIZE,)


@pytest.mark.parametrize("method", ["hades_r", "direct"])
def test_evaluate_schema_same_seeds_same_result_and_no_recompile(method):
    candidate = TINY_CANDIDATES[method]
    out = hades.evaluate(TINY, 3, candidate, [0, 1])
    assert set(out) == {"x", "curve", "final", "return_max"}
    np.testing.assert_array_equal(out["x"], [1, 2, 3])
    assert out["curve"].shape == (2, 3) and out["return_max"].shape == (2, 3) and out["final"].shape == (2,)
    for values in (out["curve"], out["return_max"], out["final"]):
        assert np.all(np.isfinite(values)) and np.all((values >= 1.0) & (values <= 50.0))
    assert np.all(out["return_max"] >= out["curve"])
    with count_compilations() as counter:
        again = hades.evaluate(TINY, 3, candidate, [0, 1])
    assert counter.compiles == 0
    for k in out:
        np.testing.assert_array_equal(out[k], again[k])
    other = hades.evaluate(TINY, 3, candidate, [2, 0])
    np.testing.assert_array_equal(other["curve"][1], out["curve"][0])  # a seed's result does not depend on others
    assert not np.array_equal(other["curve"][0], out["curve"][0])


def test_held_out_width_changes_only_the_final_evaluation():
    candidate = TINY_CANDIDATES["hades_r"]  # its search step is already compiled by the test above
    wide = dataclasses.replace(TINY, name="tiny_w32", options=(*TINY.options, ("width", 32)))
    narrow, transfer = hades.evaluate(TINY, 2, candidate, [0]), hades.evaluate(wide, 2, candidate, [0])
    np.testing.assert_array_equal(narrow["curve"], transfer["curve"])  # same search (search_width 8)
    unit = hades.kernel_config(wide, 2)
    method, config, _ = hades.unit.unit_problem(unit, {"method": "direct"})
    assert method == "direct" and unit.width == 32 and config.width == 32  # direct searches a policy of the final width itself


def _profile(num_ideas=3):
    return dataclasses.replace(hades.PROFILES["smoke"], num_ideas=num_ideas)


def test_propose_is_deterministic_distinct_and_away_from_baselines():
    t, profile = hades.TEMPLATE, _profile(3)
    ideas = t.propose(t, profile, [], 3, 7)
    assert ideas == t.propose(t, profile, [], 3, 7)
    assert len(ideas) == 3 and len({i["Name"] for i in ideas}) == 3
    baselines = [t.load(b.source) for b in t.baselines.values()]
    for idea in ideas:
        assert idea["kind"] == "parametric" and idea["expression"] is None and idea["expression_latex"] is None
        assert idea["backend"] == "offline" and idea["mutations"]
        for field in ("Title", "Hypothesis", "Experiment"):
            assert isinstance(idea[field], str) and len(idea[field]) > 40 and "{" not in idea[field]
        assert all(1 <= idea[k] <= 10 for k in ("Interestingness", "Feasibility", "Novelty"))
        text = t.render(t, idea)
        assert text == candidate_json(idea["candidate"]) and t.load(text) == idea["candidate"]
        assert t.check(t.load(text), jax.random.key(0)) == []
        for b in baselines:
            assert t.distance(t.probe(idea["candidate"]), t.probe(b)) >= t.novelty_threshold
    for a in ideas:
        for b in ideas:
            if a is not b:
                assert cand.distance(a["candidate"], b["candidate"]) >= search.DIVERSITY
    assert any(t.propose(t, profile, [], 3, s) != ideas for s in (1, 2, 3))


def test_propose_skips_archived_configs_and_builds_on_good_ones():
    t, profile = hades.TEMPLATE, _profile(2)
    first = t.propose(t, profile, [], 2, 0)
    rows = [{"idea": i["Name"], "run_id": "old", "source": t.render(t, i), "train_mean": 100.0, "advantage": 50.0}
            for i in first]
    rows.append({"idea": "broken", "source": "{not json", "train_mean": None, "advantage": None})
    later = t.propose(t, profile, rows, 2, 0)
    assert later
    for idea in later:
        for row in rows[:-1]:
            assert cand.distance(idea["candidate"], json.loads(row["source"])) >= t.novelty_threshold
    assert any(i["parent"] in {r["idea"] for r in rows} for i in t.propose(t, _profile(4), rows, 4, 0))


def test_text_files_exist_parse_and_cite_known_keys():
    t = hades.TEMPLATE
    folder = t.text_dir
    for name in ("idea_title.j2", "idea_hypothesis.j2", "idea_experiment.j2", "seed_ideas.json",
                 "references.bib", "references.json", "llm/task.md"):
        assert (folder / name).is_file(), name
    for seed in json.loads((folder / "seed_ideas.json").read_text()):
        assert hades.check(seed["candidate"]) == [], seed["name"]
    bib = set(re.findall(r"^@\w+\{([^,]+),", (folder / "references.bib").read_text(), re.MULTILINE))
    assert {r["key"] for r in json.loads((folder / "references.json").read_text())} == bib
    assert {"lupu2024behaviour", "salimans2017evolution", "wang2018dataset", "lange2023evosax",
            "lange2022gymnax", "barto1983neuronlike"} <= bib
    latex = jinja2.Environment(block_start_string="<%", block_end_string="%>", variable_start_string="<<",
                               variable_end_string=">>", comment_start_string="<#", comment_end_string="#>")
    sections = sorted((folder / "paper").glob("*.tex.j2"))
    assert {p.name for p in sections} == {f"{s}.tex.j2" for s in
                                          ("introduction", "background", "method", "related_work", "limitations")}
    for path in sections:
        source = path.read_text()
        latex.parse(source)
        for group in re.findall(r"\\cite[pt]?\{([^}]+)\}", source):
            assert set(group.split(",")) <= bib, (path.name, group)
    task = (folder / "llm" / "task.md").read_text()
    assert all(f'"{k}"' in task for k in hades.KEYS)


@pytest.mark.slow
@pytest.mark.parametrize("num_pairs, seed", [(4, 2)])  # larger datasets: `scientist meta --template hades`
def test_hades_solves_cartpole_for_fresh_policies(num_pairs, seed):
    """HaDES-R, OpenES population 64: fresh width-64 policies cloned on the found dataset average >= 450 of 500."""
    config = hades.HadesConfig(num_pairs=num_pairs)
    es = meta.ESConfig(population_size=64, std=0.1, lr=0.05)
    start = time.perf_counter()
    key = jax.random.key(seed)
    init_key, run_key = jax.random.split(key)
    mean = hades.initial_candidate(init_key, config)
    strategy, es_params = meta.make_strategy(es, mean)
    step = meta.make_meta_step(strategy, hades.make_fitness(config))
    fresh = jax.jit(jax.vmap(hades.make_hades_fitness(config), in_axes=(0, None)))
    fresh_keys = jax.random.split(jax.random.key(999), 16)  # never used by the search
    state = meta.canonical_state(meta.init_state(init_key, strategy, es_params, mean))
    best = 0.0
    for generation in range(60):
        state, _ = step(jax.random.fold_in(run_key, generation), state, es_params)
        if (generation + 1) % 10 == 0:
            best = float(fresh(fresh_keys, strategy.get_mean(state)).mean())
            if best >= 450:
                break
    print(f"HaDES CartPole, {num_pairs} pairs, seed {seed}: {generation + 1} generations, fresh return {best:.1f}, "
          f"{time.perf_counter() - start:.1f} s")
    assert best >= 450
