"""The ``bbo`` template's kernel: baselines reach the sphere's optimum, one compiled call per unit that a second
call does not recompile, the rule family's source matches its traced form, and the Evolution Transformer's
invariances (member order) and equivariance (dimension order)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels.optimisers import evotf
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.bbo import kernel, problems, rules

SPHERE = kernel.BBOConfig(("sphere",), 10, 16, 300)
# final log10 regret every seed must reach on the 10-dimensional sphere in 300 generations of 16
REACH = {"cma_es": -6.0, "sep_cma_es": -6.0, "snes": -6.0, "recomb_snes": -6.0, "hill_climb": -3.0, "open_es": 0.0}


@pytest.fixture(scope="module")
def sphere_results():
    template = make("bbo")
    loaded = {name: template.load(b.source) for name, b in template.baselines.items()}
    results = {name: kernel.unit_result(kernel.run_seeds(c, SPHERE, [0, 1]), SPHERE) for name, c in loaded.items()}
    return {"candidates": loaded, **results}


@pytest.mark.slow
def test_every_baseline_gets_near_the_sphere_optimum_cma_es_within_1e_6(sphere_results):
    for name, floor in REACH.items():
        assert np.all(sphere_results[name]["final"] <= floor), (name, sphere_results[name]["final"])
    rs = sphere_results["random_search"]["curve"]
    assert np.all(rs[:, -1] < rs[:, 0])  # random search only improves its best sample
    for name in make("bbo").baselines:
        res = sphere_results[name]
        assert np.all(np.diff(res["curve"], axis=1) <= 0)  # best-so-far curves never rise


@pytest.mark.slow
def test_a_second_unit_call_compiles_nothing(sphere_results):
    for name in ("cma_es", "recomb_snes"):  # a loaded plug-in is a static callable: one compile per candidate
        cand = sphere_results["candidates"][name]
        with count_compilations() as counter:
            again = kernel.unit_result(kernel.run_seeds(cand, SPHERE, [0, 1]), SPHERE)
        assert counter.compiles == 0, name
        np.testing.assert_array_equal(again["final"], sphere_results[name]["final"])


def test_function_names_are_evosax_bbob_functions():
    from evosax.problems.bbob.bbob_fns import bbob_fns

    assert problems.FUNCTIONS == tuple(bbob_fns)
    template = make("bbo")
    train = {f for s in template.settings.values() if not s.held_out for f in s.option("functions")}
    held = set(template.setting("heldout_fns_d10").option("functions"))
    assert train and held and not train & held


def test_rendered_rules_compute_what_the_traced_family_computes():
    from jaxlib_kernels.plugin import load_plugin

    rng = np.random.default_rng(0)
    pop, fit = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=12).astype(np.float32)
    mean, std = rng.normal(size=4).astype(np.float32), np.exp(rng.normal(size=4)).astype(np.float32)
    for params in ({}, {"weights": "linear", "std_rule": "elite", "anneal": 0.05},
                   {"weights": "equal", "std_rule": "fixed", "elite": 0.2, "lr_mean": 1.5}):
        fn = load_plugin(rules.render(params), "update")
        a = fn(pop, fit, mean, std, np.float32(0.4))
        b = rules.family_update(rules.as_arrays(params), pop, fit, mean, std, np.float32(0.4))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_a_rule_of_the_family_runs_with_its_float_literals_lifted_whatever_their_values():
    from jaxlib_kernels.plugin import load_plugin
    from jaxlib_kernels.tree import operators

    template = make("bbo")
    rng = np.random.default_rng(1)
    pop, fit = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(size=12).astype(np.float32)
    mean, std = rng.normal(size=4).astype(np.float32), np.exp(rng.normal(size=4)).astype(np.float32)
    rule = rules.render({"weights": "linear", "std_rule": "elite", "anneal": 0.05}, "a doc")
    values = operators.constants(template, rule)
    tuned = operators.with_constants(template, rule, [v * 0.9 - 0.01 for v in values])  # one literal goes negative
    structure, constants = rules.lift(rule)
    assert constants == tuple(values) and rules.lift(tuned)[0] == structure
    for text in (rule, tuned):
        a = load_plugin(text, "update")(pop, fit, mean, std, np.float32(0.4))
        b = rules.lifted_update(structure)(np.asarray(rules.lift(text)[1], np.float32), pop, fit, mean, std,
                                           np.float32(0.4))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    assert rules.lift(rules.render({})) != rules.lift(rule)[0]  # another structure
    assert rules.lift(template.baselines["hill_climb"].source) is None  # hand-written: its own program


def test_the_evolution_transformer_is_member_invariant_and_dimension_equivariant():
    params = evotf.init_params(jax.random.key(0), 16)
    params["head"]["w"] = jax.random.normal(jax.random.key(1), params["head"]["w"].shape)  # non-trivial output
    rng = np.random.default_rng(1)
    P, D, K = 8, 5, 4
    pop, fit = jnp.asarray(rng.normal(size=(P, D)), jnp.float32), jnp.asarray(rng.normal(size=P), jnp.float32)
    mean, std = jnp.zeros(D), jnp.ones(D)
    window, valid = jnp.zeros((D, K, 16)), jnp.zeros(K, bool)
    step = jax.jit(evotf.step)
    m, s, _, _ = step(params, window, valid, pop, fit, mean, std)
    perm_p, perm_d = rng.permutation(P), rng.permutation(D)
    m2, s2, _, _ = step(params, window, valid, pop[perm_p], fit[perm_p], mean, std)
    np.testing.assert_allclose(m2, m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s2, s, rtol=1e-5, atol=1e-6)
    m3, s3, _, _ = step(params, window, valid, pop[:, perm_d], fit, mean, std)
    np.testing.assert_allclose(m3, m[perm_d], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s3, s[perm_d], rtol=1e-5, atol=1e-6)


def test_the_instances_rotations_are_factorised_one_matrix_at_a_time():
    """jaxlib 0.10's batched CPU QR/LU wait on XLA's thread pool and deadlocked two at a time on 2 cores
    (problems.rotations): the setup program holds only unbatched factorisations, and their rotations are
    orthogonal with det +1."""
    import re

    config = kernel.BBOConfig(("sphere", "rastrigin_rotated"), 81, 8, 3)
    seeds, fns = jnp.arange(4, dtype=jnp.int32), jnp.arange(2, dtype=jnp.int32)
    text = kernel._setup(config, False).lower(seeds, fns).as_text()
    calls = [line for line in text.splitlines() if re.search(r"custom_call @lapack_\w+", line)]
    assert {re.search(r"@(lapack_\w+)", c).group(1) for c in calls} >= {"lapack_sgeqrf_ffi", "lapack_sgetrf_ffi"}
    assert all('num_batch_dims = "0"' in c for c in calls), [c[:160] for c in calls]
    inst = kernel._setup(config, False)(seeds, fns)["inst"]
    for name in ("R", "Q"):
        rot = np.asarray(inst[name], np.float64)
        assert rot.shape == (4, 2, 81, 81)
        np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(81), rot.shape), atol=1e-4)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-3)
    assert not np.allclose(inst["R"], inst["Q"]) and not np.allclose(inst["R"][0], inst["R"][1])


# ---- the neuroevolution setting (neuro.py): an MLP policy on gymnax's Pendulum-v1 ---------------------------------

NEURO_BUDGET, NEURO_SEEDS = 30, [0, 1, 2, 3]


@pytest.fixture(scope="module")
def neuro_results():
    template = make("bbo")
    setting = template.setting("neuro_pendulum")
    loaded = {name: template.load(template.baselines[name].source) for name in ("random_search", "snes")}
    results = {name: template.evaluate(setting, NEURO_BUDGET, c, NEURO_SEEDS) for name, c in loaded.items()}
    return {"template": template, "setting": setting, "candidates": loaded, **results}


def test_the_neuroevolution_setting_is_held_out_in_paper_and_default_not_smoke():
    from jaxlib_kernels.templates.bbo import neuro

    template = make("bbo")
    setting = template.setting("neuro_pendulum")
    assert setting.held_out and setting.option("dim") == neuro.num_params("gymnax_pendulum") == 81
    assert "neuro_pendulum" in template.profile("paper").settings
    assert "neuro_pendulum" in template.profile("default").settings
    assert "neuro_pendulum" not in template.profile("smoke").settings
    _, params = neuro.make_env(neuro.TASKS["gymnax_pendulum"])  # raises unless the sizes are gymnax's
    assert params.max_steps_in_episode == neuro.TASKS["gymnax_pendulum"].max_steps


def test_the_neuroevolution_setting_evaluates_deterministically_and_snes_beats_random_search(neuro_results):
    from jaxlib_kernels.templates.bbo import neuro

    rs, snes = neuro_results["random_search"], neuro_results["snes"]
    for res in (rs, snes):
        assert res["final"].shape == (len(NEURO_SEEDS),) and res["curve"].shape == (len(NEURO_SEEDS), NEURO_BUDGET)
        assert np.all(np.isfinite(res["curve"])) and np.all(np.diff(res["curve"], axis=1) <= 0)
        assert np.all(res["final"] >= np.log10(neuro.REGRET_FLOOR))
        assert np.all(res["curve"][:, 0] <= np.log10(16.3 * 200))  # a step costs at most pi^2 + 6.4 + 0.004
    # an ES improves clearly over random search already at this tiny budget (lower log10 regret is better)
    assert snes["final"].mean() < rs["final"].mean() - 0.1, (snes["final"], rs["final"])
    template, setting = neuro_results["template"], neuro_results["setting"]
    for name in ("random_search", "snes"):  # the same seeds give the same values, and a second call compiles nothing
        with count_compilations() as counter:
            again = template.evaluate(setting, NEURO_BUDGET, neuro_results["candidates"][name], NEURO_SEEDS)
        assert counter.compiles == 0, name
        np.testing.assert_array_equal(again["final"], neuro_results[name]["final"])
        np.testing.assert_array_equal(again["curve"], neuro_results[name]["curve"])


def test_the_evolution_transformer_and_rule_plugins_run_on_the_neuroevolution_setting():
    template = make("bbo")
    setting = template.setting("neuro_pendulum")
    model = evotf.EvoTF(evotf.init_params(jax.random.key(0), 8), 4, "untrained")
    rule = template.load(template.baselines["recomb_snes"].source)
    for cand in (model, rule):
        res = template.evaluate(setting, 3, cand, [0])
        assert res["final"].shape == (1,) and np.all(np.isfinite(res["final"]))


def test_the_pretrained_evolution_transformer_is_a_baseline_named_by_its_weights(sphere_results):
    from jaxlib_kernels.plugin import PluginError
    from jaxlib_kernels.templates.bbo import ead

    template = make("bbo")
    source = template.baselines["evotf_ead"].source
    assert template.load(source) is evotf.pretrained() and kernel.check(evotf.pretrained(), jax.random.key(0)) == []
    template.static_check(source)
    stale = source.replace(kernel.weights_digest(), "0" * 16)
    with pytest.raises(PluginError, match="ships"):
        template.load(stale)
    # the shipped weights are bbo's EAD model of the default configuration
    with np.load(evotf.PRETRAINED) as data:
        assert str(data["meta_config"]) == repr(ead.EADConfig())
    assert "evotf_ead" in template.profile("paper").baselines
    assert "evotf_ead" not in template.profile("default").baselines + template.profile("smoke").baselines
    # its behaviour is its own (a step of the mean and std, not random search's fixed distribution) and in context
    # it gets far below random search on the sphere
    behaviour = kernel.probe(evotf.pretrained())
    assert np.all(np.isfinite(behaviour)) and not np.allclose(behaviour, kernel.probe(template.load(
        template.baselines["random_search"].source)))
    assert np.all(sphere_results["evotf_ead"]["final"] < sphere_results["random_search"]["final"] - 1.0)
