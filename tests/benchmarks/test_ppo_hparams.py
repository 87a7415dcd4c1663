"""The PPO hyperparameter problem of ``benchmarks/bbo_hparams.py`` (``benchmarks/ppo_hparams.py``): PPO's traced
learning rate and drift are honoured, and another learning rate or drift compiles nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.profiling import count_compilations

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import ppo_hparams  # a benchmark module, found beside the scripts


def test_ppo_hyperparameters_are_traced_and_the_drift_program_is_the_lpo_one():
    from jaxlib_kernels import interpreter, symbolic
    from jaxlib_kernels.search.drift import PPO_CLIP

    assert ppo_hparams.ppo_clip(0.2) == PPO_CLIP
    r, a = np.exp(np.linspace(-1, 1, 9)), np.linspace(-2, 2, 9)
    for name, eps in (("ppo_clip", 0.35), ("dpo", 0.2), ("none", 0.1)):
        program = ppo_hparams.drift_program(name, eps)
        assert program.ops.shape == (ppo_hparams.program_length(),)
        got = np.asarray(interpreter.run(program, jnp.asarray(r), jnp.asarray(a), jnp.float32(0.5)))
        want = np.broadcast_to(symbolic.evaluate_numpy(ppo_hparams.drift_expression(name, eps), r, a, np.full(9, 0.5)),
                               (9,))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    space = ppo_hparams.space((1, 1))
    problem = ppo_hparams.PPOHparams(budget=ppo_hparams.TINY_BUDGET, overrides=ppo_hparams.TINY, space=space)
    config = {"lr": 1e-2, "clip_eps": 0.2, "update_epochs": 1, "drift": "ppo_clip"}
    trained = problem.train(config)
    init = ppo_hparams.ppo.init_params(problem.ppo_config(config), ppo_hparams.ppo.seed_keys(list(problem.seeds))[1])
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
