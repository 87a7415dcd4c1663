"""The ``dpo`` template: the baselines against the papers' formulas, the symbolic variables, and the LM kernel.

The kernel tests share one module fixture (the training setting's SFT model comes from the disk cache that the
contract test and the smoke run also use) and assert that a second evaluation, and an evaluation of the held-out
beta range, compile nothing; a tree stage's population (``Template.population``: lr and max_grad_norm per member)
equals one evaluation per node, and another stage or units at other hyperparameters compile nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

from jaxlib_kernels import plugin, symbolic
from jaxlib_kernels.search import preference as search
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.dpo import kernel, losses


def _loss(name: str):
    return plugin.load_plugin(losses.SOURCES[name], "preference_loss")


def test_lrml_has_the_papers_local_minimum_and_maximum_at_beta_005():
    """Lu et al. (2024), appendix: at beta = tau = 0.05 a local minimum near rho = -2.3714 (0.7859) and a local
    maximum near rho = 1.44012 (0.8783)."""
    f = _loss("lrml")
    beta = jnp.float32(0.05)
    grad = jax.jit(jax.grad(lambda r: f(r, beta)))
    lo = brentq(lambda x: float(grad(jnp.float32(x))), -4.0, -1.0, xtol=1e-6)
    hi = brentq(lambda x: float(grad(jnp.float32(x))), 0.5, 3.0, xtol=1e-6)
    assert lo == pytest.approx(-2.3714, abs=2e-3) and hi == pytest.approx(1.44012, abs=2e-3)
    assert float(f(jnp.float32(lo), beta)) == pytest.approx(0.7859, abs=1e-4)
    assert float(f(jnp.float32(hi), beta)) == pytest.approx(0.8783, abs=1e-4)
    second = jax.grad(grad)
    assert float(second(jnp.float32(lo))) > 0 > float(second(jnp.float32(hi)))


def test_dpo_gradient_matches_its_closed_form():
    """d/d rho of -log sigmoid(beta rho) is -beta sigmoid(-beta rho)."""
    f = _loss("dpo")
    rho = jnp.linspace(-80.0, 80.0, 41)
    for beta in (0.025, 0.1, 0.5):
        grad = jax.grad(lambda r, b=beta: jnp.sum(f(r, jnp.float32(b))))(rho)
        np.testing.assert_allclose(np.asarray(grad), -beta * np.asarray(jax.nn.sigmoid(-beta * rho)), rtol=1e-5,
                                   atol=1e-7)


def test_baselines_follow_their_formulas_and_trees():
    """Each source against an independent numpy formula; the expression trees render to the same function."""
    rho = np.linspace(-30.0, 30.0, 61).astype(np.float32)
    beta = 0.1
    z = beta * rho.astype(np.float64)
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    dpo = np.logaddexp(0.0, -z)
    expected = {
        "dpo": dpo, "ipo": (rho - 1 / (2 * beta)) ** 2, "slic": np.maximum(0.0, 1 - z),
        "lrml": (1 - sig(z / 0.05)) * dpo + sig(z / 0.05) * np.exp(-z),
        "padll": 0.9 * np.where(rho < 0, 0.5, 1.0) * dpo, "cell": 0.5 * dpo + 0.5 * np.exp(-z),
        "dbaql": sig(np.var(z / 0.05)) * np.logaddexp(0.0, -z / 0.9) + (1 - sig(np.var(z / 0.05))) * np.exp(-0.9 * z),
    }
    m2 = 0.5 + 0.01 * (np.mean(sig(z / 0.05)) - 0.5)
    q = sig(0.05 * m2 - z)
    expected["aql"] = q * dpo + (1 - q) * np.maximum(0.0, 1 - z)
    u = z / 0.05
    m1 = np.mean(sig(-u)) * np.var(u)
    r = sig(0.1 * np.abs(u - (m1 + 0.05 * (sig(np.mean(u)) - m1))))
    expected["aqfl"] = r * dpo + (1 - r) * np.maximum(0.0, 1 - z)
    assert set(expected) == set(losses.SOURCES)
    for name, want in expected.items():
        got = np.asarray(_loss(name)(jnp.asarray(rho), jnp.float32(beta)), dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5, err_msg=name)
    for name, expr in losses.EXPRESSIONS.items():
        src = symbolic.render_source(expr, "preference_loss", args=losses.ARGS, variables=losses.VARIABLES)
        got = np.asarray(plugin.load_plugin(src, "preference_loss")(jnp.asarray(rho), jnp.float32(beta)))
        np.testing.assert_allclose(got, expected[name], rtol=2e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(symbolic.evaluate_env(expr, {"z": z}), expected[name], rtol=1e-6, err_msg=name)


def test_symbolic_keeps_lpo_variables_by_default_and_takes_a_template_map():
    with pytest.raises(symbolic.ExpressionError, match="unknown variable 'z'"):
        symbolic.validate(["logsig", "z"])
    symbolic.validate(["logsig", "z"], losses.VARIABLES)
    with pytest.raises(symbolic.ExpressionError, match="unknown variable 'r'"):
        symbolic.validate(["mul", "r", "A"], losses.VARIABLES)
    assert symbolic.to_latex(["logsig", "z"], losses.VARIABLES) == r"-\log\sigma\left(z\right)"
    assert symbolic.to_source_expr(["mul", "r", "A"]) == "(ratio * advantage)"


def test_the_search_behaviour_is_the_probe_of_the_rendered_source():
    """The offline search's numpy gradient in z and the template's JAX probe agree for a rendered idea."""
    template = make("dpo")
    ideas = search.LANGUAGE.propose(template, template.profile("smoke"), [], 1, seed=3)
    assert ideas
    probe = template.probe_text(template.render(template, ideas[0]))
    np.testing.assert_allclose(probe, search.behaviour(ideas[0]["expression"]), rtol=2e-3, atol=2e-3)


def test_the_gate_refuses_a_loss_that_breaks_and_says_why():
    template = make("dpo")
    bad = "import jax.numpy as jnp\n\ndef preference_loss(rho, beta):\n    return jnp.log(beta * rho)\n"
    problems = template.check(template.load(bad), jax.random.key(0))
    assert problems and "non-finite" in problems[0]
    flat = "import jax.numpy as jnp\n\ndef preference_loss(rho, beta):\n    return jnp.zeros_like(rho)\n"
    assert any("zero everywhere" in p for p in template.check(template.load(flat), jax.random.key(0)))
    scalar = "import jax.numpy as jnp\n\ndef preference_loss(rho, beta):\n    return jnp.mean(rho)\n"
    assert "shape" in template.check(template.load(scalar), jax.random.key(0))[0]


@pytest.fixture(scope="module")
def trained():
    """DPO on the training setting, 2 seeds, a small budget (the SFT model from the shared disk cache)."""
    template = make("dpo")
    loss = template.load(template.baselines["dpo"].source)
    setting = template.setting("unigram")
    return template, loss, setting, template.evaluate(setting, 16, loss, [0, 1])


@pytest.mark.slow
def test_evaluation_compiles_once_shares_the_program_across_beta_ranges_and_repeats(trained):
    from jaxlib_kernels.profiling import count_compilations

    template, loss, setting, first = trained
    with count_compilations() as counter:
        again = template.evaluate(setting, 16, loss, [0, 1])
        other = template.evaluate(template.setting("unigram_betas"), 16, loss, [0, 1])
    assert counter.compiles == 0, f"compiled {counter.compiles}x"
    for key in ("curve", "final", "reward", "kl"):
        np.testing.assert_array_equal(first[key], again[key])
    assert other["betas"].tolist() != first["betas"].tolist() and not np.array_equal(other["kl"], first["kl"])
    # shapes: x (T,), curve (S, T), per-beta reward and KL (S, betas); KL is never negative
    assert first["curve"].shape == (2, first["x"].shape[0]) and first["reward"].shape == (2, 4)
    assert np.all(first["kl"] >= 0) and np.all((first["reward"] >= 0) & (first["reward"] <= 1))
    np.testing.assert_allclose(first["final"], np.mean(first["reward"] - 0.1 * first["kl"], axis=1))


@pytest.mark.slow
def test_dpo_moves_reward_up_and_the_reference_is_cached(trained):
    from jaxlib_kernels.profiling import count_compilations

    template, _, setting, first = trained
    # the SFT samples' mean reward (the pairs) against the policy's after training, at every beta
    assert np.all(first["reward"].mean(axis=0) > first["ref_reward"].mean()), (first["reward"], first["ref_reward"])
    config = template.kernel_config(setting, 16)
    kernel.sft_params.cache_clear()
    with count_compilations() as counter:
        kernel.sft_params(config.lm, kernel.TaskConfig(reward=""))
    assert counter.compiles == 0, "the SFT model was trained again instead of read from the disk cache"


@pytest.mark.slow
def test_a_population_of_interpreted_losses_trains_as_the_native_ones_in_one_compile(trained):
    """The discovery engine's fitness on dpo (``kernel.train_programs``): DPO and LRML as preference-language
    programs, trained as one population on the same seeds, score what their own compiled sources score; a
    population of other formulas of the same shape compiles nothing."""
    from jaxlib_kernels import interpreter
    from jaxlib_kernels.profiling import count_compilations

    template, _, setting, first = trained
    config = template.kernel_config(setting, 16)
    programs = interpreter.encode_population([losses.EXPRESSIONS["dpo"], losses.EXPRESSIONS["lrml"]], 32, "preference")
    population = kernel.train_programs(config, programs, [0, 1])
    assert population.shape == (2, 2)
    np.testing.assert_allclose(population[0], first["final"], rtol=1e-3, atol=1e-3)
    lrml = template.evaluate(setting, 16, _loss("lrml"), [0, 1])["final"]
    np.testing.assert_allclose(population[1], lrml, rtol=1e-3, atol=1e-3)
    others = interpreter.encode_population([losses.EXPRESSIONS["slic"], losses.EXPRESSIONS["cell"]], 32, "preference")
    with count_compilations() as counter:
        kernel.train_programs(config, others, [0, 1])
    assert counter.compiles == 0, f"compiled {counter.compiles}x"


BROKEN = "def preference_loss(rho, beta):\n    return rho +\n"


def _rendered(name: str) -> str:
    """A baseline's tree rendered as the preference language writes a candidate (a formula: interpreted)."""
    return symbolic.render_source(losses.EXPRESSIONS[name], "preference_loss", args=search.LANGUAGE.args,
                                  variables=search.LANGUAGE.variables)


@pytest.fixture(scope="module")
def stage(trained):
    """A tree stage's nodes through ``Template.population`` and one ``evaluate`` per node: two trees (one compiled
    call, lr and max_grad_norm per member), a broken text and the hand-written DPO source (its own program, the
    ``trained`` fixture's)."""
    import dataclasses

    template, _, setting, _ = trained
    nodes = [(_rendered("dpo"), {}), (_rendered("dpo"), {"lr": 5e-3, "max_grad_norm": 0.3}), (BROKEN, {}),
             (losses.SOURCES["dpo"], {})]
    texts, hparams = [t for t, _ in nodes], [h for _, h in nodes]
    together = template.evaluate_population(setting, 16, texts, hparams, [0, 1])
    one_by_one = dataclasses.replace(template, population=None).evaluate_population(setting, 16, texts, hparams,
                                                                                    [0, 1])
    return together, one_by_one


@pytest.mark.slow
def test_the_population_equals_one_evaluate_per_node_and_a_broken_node_fails_alone(trained, stage):
    _, _, _, first = trained
    together, one_by_one = stage
    ok = [0, 1, 3]
    np.testing.assert_allclose(together["final"][ok], one_by_one["final"][ok], rtol=1e-4, atol=1e-4)
    assert np.isfinite(together["final"][ok]).all() and not any(together["errors"][i] for i in ok)
    assert np.isnan(together["final"][2]).all() and together["errors"][2] == one_by_one["errors"][2]
    assert together["errors"][2] and "\n" not in together["errors"][2]
    # the interpreted tree trains as DPO's hand-written source; the other lr and max_grad_norm reached training
    np.testing.assert_allclose(together["final"][0], first["final"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(together["final"][3], first["final"], rtol=1e-6)
    assert not np.allclose(together["final"][0], together["final"][1])


@pytest.mark.slow
def test_another_stage_and_units_at_other_hyperparameters_compile_nothing(trained, stage):
    from jaxlib_kernels.profiling import count_compilations

    template, _, setting, first = trained
    texts, hparams = [_rendered("lrml"), _rendered("slic")], [{"lr": 2e-3}, {"max_grad_norm": 3.0}]
    with count_compilations() as counter:
        out = template.evaluate_population(setting, 16, texts, hparams, [0, 1])
        # experiment units (a candidate on S seeds): a tree and the hand-written source at other hyperparameters
        tree = template.evaluate(setting, 16, template.load(_rendered("cell")), [0, 1], hparams={"lr": 7e-3})
        source = template.evaluate(setting, 16, template.load(losses.SOURCES["dpo"]), [0, 1],
                                   hparams={"lr": 4e-3, "max_grad_norm": 2.0})
    assert (counter.compiles, counter.cache_hits) == (0, 0), f"compiled {counter.compiles}x"
    assert np.isfinite(out["final"]).all() and out["errors"] == [None, None]
    for unit in (tree, source):  # the unit's result keeps every key and shape
        assert set(unit) == set(first) and all(np.shape(unit[k]) == np.shape(first[k]) for k in first)
        assert np.isfinite(unit["final"]).all() and not np.allclose(unit["final"], first["final"])
