"""The expression interpreter: equal to the rendered source in value and gradient, and one compile for a population."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels import interpreter, ppo, symbolic
from jaxlib_kernels.plugin import load_plugin
from jaxlib_kernels.profiling import count_compilations
from jaxlib_kernels.search.drift import EXPRESSIONS, PPO_CLIP


def random_tree(rng: np.random.Generator, depth: int, language: str = "drift"):
    """A random expression over every variable and operator of an interpreter language (seeded; the property test's
    inputs): the drift language is lpo's ``symbolic.VARIABLES``, the preference language dpo's ``z``."""
    variables, unary = interpreter.LANGUAGES[language]
    if depth == 0 or rng.random() < 0.25:
        if rng.random() < 0.3:
            return float(np.round(rng.normal(), 3))
        return str(rng.choice(list(variables)))
    k = rng.random()
    if k < 0.35:
        return [str(rng.choice(list(unary))), random_tree(rng, depth - 1, language)]
    if k < 0.85:
        return [str(rng.choice(list(interpreter.BINARY_OPS))), random_tree(rng, depth - 1, language),
                random_tree(rng, depth - 1, language)]
    if k < 0.93:
        lo = float(np.round(rng.uniform(0.3, 1.0), 3))
        return ["clip", random_tree(rng, depth - 1, language), lo, lo + float(np.round(rng.uniform(0.0, 1.0), 3))]
    return ["ifpos", *(random_tree(rng, depth - 1, language) for _ in range(3))]


def test_interpreter_equals_rendered_source_in_value_and_gradient():
    rng = np.random.default_rng(0)
    ratio = jnp.exp(0.5 * jax.random.normal(jax.random.key(0), (64,)))
    advantage = 2.0 * jax.random.normal(jax.random.key(1), (64,))
    progress = jnp.float32(0.3)
    value = jax.jit(interpreter.run)
    grad = jax.jit(jax.grad(lambda r, a, prog: interpreter.run(prog, r, a, progress).sum(), argnums=(0, 1)))
    checked = 0
    for _ in range(50):
        expr = random_tree(rng, 5)
        if not interpreter.fits(expr) or symbolic.size(expr) > 64:
            continue
        source = symbolic.render_source(expr, "drift", doc="A random drift.")
        fn = load_plugin(source, "drift")
        # a rendered plug-in is recognised as its tree (the route by which lpo units use the interpreter)
        assert interpreter.expression_of(fn) is not None
        program = interpreter.encode(expr, 64)
        np.testing.assert_allclose(value(program, ratio, advantage, progress), fn(ratio, advantage, progress),
                                   rtol=1e-5, atol=1e-6)
        expected = jax.grad(lambda r, a, fn=fn: fn(r, a, progress).sum(), argnums=(0, 1))(ratio, advantage)
        for got, want in zip(grad(ratio, advantage, program), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 35
    for expr in EXPRESSIONS.values():
        assert interpreter.decode(interpreter.encode(expr)) == symbolic.canonical(expr)


def test_only_rendered_sources_are_recognised():
    rendered = symbolic.render_source(PPO_CLIP, "drift", doc="PPO clip.")
    assert interpreter.expression_of_source(rendered) == PPO_CLIP
    hand_written = rendered.replace("jnp.zeros_like(ratio)", "jnp.ones_like(ratio)")
    assert interpreter.expression_of_source(hand_written) is None
    looped = rendered.replace("    return", "    for _ in range(2):\n        ratio = ratio * 1.0\n    return")
    assert interpreter.expression_of_source(looped) is None
    assert interpreter.expression_of(load_plugin(hand_written, "drift")) is None  # the compile-per-candidate path
    with pytest.raises(interpreter.ProgramError):
        interpreter.encode(_deep(9))
    # a tree of another template's operators or variables (dpo's) is refused, and so runs as its own program
    for foreign in (["sig", "r"], ["add", "z", 1.0]):
        with pytest.raises((interpreter.ProgramError, symbolic.ExpressionError)):
            interpreter.encode(foreign)
        assert not interpreter.fits(foreign)


def _deep(n: int):
    """A right-leaning sum that keeps ``n + 1`` values on the stack."""
    return "r" if n == 0 else ["add", ["sq", "A"], ["mul", "r", _deep(n - 1)]] if n % 2 else ["add", "p", _deep(n - 1)]


TINY = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32, num_minibatches=2, update_epochs=2)
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def population():
    hard = ppo.train_seeds(TINY, ppo.ppo_clip_drift(), SEEDS)
    first = [PPO_CLIP, EXPRESSIONS["dpo"], EXPRESSIONS["kl"], 0.0]
    out = ppo.train_programs(TINY, interpreter.encode_population(first, 32), SEEDS)
    return hard, out


@pytest.mark.slow
def test_ppo_clip_through_the_interpreter_equals_the_hard_coded_clip(population):
    hard, out = population
    for k in ("episodes", "return_sum", "policy_loss", "drift"):
        np.testing.assert_allclose(out[k][0], hard[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert out["return_sum"].shape[:2] == (4, len(SEEDS))
    assert not np.allclose(out["drift"][0], out["drift"][2])  # different formulas, different training


@pytest.mark.slow
def test_a_population_compiles_once_over_several_generations(population):
    rng = np.random.default_rng(1)
    with count_compilations() as counter:
        for _ in range(2):  # two more generations of new formulas and constants, same shapes
            exprs = []
            while len(exprs) < 4:
                e = random_tree(rng, 3)
                if interpreter.fits(e) and symbolic.size(e) <= 32:
                    exprs.append(["relu", e])
            out = ppo.train_programs(TINY, interpreter.encode_population(exprs, 32), SEEDS)
            assert out["episodes"].shape == (4, len(SEEDS), TINY.num_updates)
    assert counter.compiles == 0


def test_gradient_in_the_constants_and_in_several_inputs_at_once():
    """The forward-mode derivative serves every input: the constants (tuning by gradient), and r and A together."""
    expr = ["mul", 0.7, ["tanh", ["mul", "A", ["sub", "r", 1.3]]]]
    program = interpreter.encode(expr, 32)
    ratio = jnp.exp(0.5 * jax.random.normal(jax.random.key(2), (16,)))
    advantage = jax.random.normal(jax.random.key(3), (16,))

    def total(consts, r, a):
        return interpreter.run(interpreter.Program(program.ops, consts), r, a, 0.5).sum()

    d_consts, d_r, d_a = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(jnp.asarray(program.consts), ratio, advantage)
    t = np.tanh(advantage * (ratio - 1.3))
    slots = np.flatnonzero(np.asarray(program.ops) == interpreter.CONST)  # 0.7 then 1.3 in postfix order
    np.testing.assert_allclose(d_consts[slots], [t.sum(), (-0.7 * advantage * (1 - t**2)).sum()], rtol=1e-5)
    assert np.all(np.delete(np.asarray(d_consts), slots) == 0)
    np.testing.assert_allclose(d_r, 0.7 * advantage * (1 - t**2), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d_a, 0.7 * (ratio - 1.3) * (1 - t**2), rtol=1e-5, atol=1e-7)


def test_the_preference_language_equals_dpos_rendered_loss_in_value_and_gradient():
    """dpo's trees in z = beta * rho (its operators logsig, sig, expneg among them) run through the interpreter as the
    template renders them: same values, same gradient in rho; a drift variable is refused in that language."""
    from jaxlib_kernels.templates.dpo.losses import ARGS, VARIABLES

    rng = np.random.default_rng(1)
    rho = 3.0 * jax.random.normal(jax.random.key(4), (64,))
    beta = jnp.float32(0.25)
    value = jax.jit(lambda prog, rho: interpreter.preference_loss_of(prog)(rho, beta))
    grad = jax.jit(jax.grad(lambda rho, prog: interpreter.preference_loss_of(prog)(rho, beta).sum()))
    checked = 0
    for _ in range(40):
        expr = random_tree(rng, 4, "preference")
        if not interpreter.fits(expr, "preference"):
            continue
        fn = load_plugin(symbolic.render_source(expr, "preference_loss", args=ARGS, variables=VARIABLES),
                         "preference_loss")
        program = interpreter.encode(expr, 32, "preference")
        np.testing.assert_allclose(value(program, rho), fn(rho, beta), rtol=1e-5, atol=1e-6)
        want = jax.grad(lambda r, fn=fn: fn(r, beta).sum())(rho)
        np.testing.assert_allclose(grad(rho, program), want, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 25
    assert not interpreter.fits(["logsig", "r"], "preference") and not interpreter.fits(["sig", "z"])
