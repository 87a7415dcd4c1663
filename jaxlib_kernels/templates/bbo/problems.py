"""BBOB problems for the ``bbo`` template: evosax 0.3's 24 noiseless BBOB functions, one instance per seed.

Hansen et al., 2009, "Real-parameter black-box optimization benchmarking: noiseless functions definitions".
The function bodies are evosax's (``evosax.problems.bbob.bbob_fns``); an instance (optimum location ``x_opt`` in
[-4, 4]^D, rotations ``R`` and ``Q``) is drawn from the seed, so two methods run on the same seed meet the same
instance. We report the *regret* ``f(x) - f(x_opt)``: evosax's function value plus its boundary penalty, without
the random offset ``f_opt`` (it cancels in the regret) and without noise.

Several functions of one dimension are evaluated together: ``fitness_fn(names, dim)`` selects the function by an
integer id with ``lax.switch``, so one compiled program is vmapped over functions and seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

# the 24 noiseless BBOB functions, in BBOB order (evosax's names; a test checks them against evosax, which is
# imported only when a fitness is built, so loading the template costs no evosax import)
FUNCTIONS: tuple[str, ...] = (
    "sphere", "ellipsoidal", "rastrigin", "bueche_rastrigin", "linear_slope", "attractive_sector",
    "step_ellipsoidal", "rosenbrock", "rosenbrock_rotated", "ellipsoidal_rotated", "discus", "bent_cigar",
    "sharp_ridge", "different_powers", "rastrigin_rotated", "weierstrass", "schaffers_f7", "schaffers_f7_ill_cond",
    "griewank_rosenbrock", "schwefel", "gallagher_101_me", "gallagher_21_hi", "katsuura", "lunacek",
)
X_RANGE = 5.0  # the BBOB search domain is [-5, 5]^D
X_OPT_RANGE = 4.0


def rotation_of(gaussian: jax.Array) -> jax.Array:
    """The uniformly random rotation of R^D made from one standard normal (D, D) matrix (QR with the sign fix,
    det +1). Call it on one matrix at a time, never under ``vmap``: :func:`rotations` says why."""
    q, r = jnp.linalg.qr(gaussian)
    q = q * jnp.sign(jnp.diag(r))[None, :]
    return q.at[0].multiply(jnp.sign(jnp.linalg.det(q)))


def rotations(gaussians: jax.Array) -> jax.Array:
    """:func:`rotation_of` of every (D, D) matrix of ``gaussians`` (..., D, D), one matrix after the other.

    Not batched on purpose: jaxlib 0.10's CPU QR and LU of a *batch* of matrices split the batch over XLA's
    intra-op thread pool and wait for the pieces; two such calls at once (the ``R`` and ``Q`` of the instances)
    hold both threads of a 2-core machine, and the pieces they wait for never run. That deadlock hung 3 of 6
    four-seed runs of the 81-dimensional neuroevolution setting (gdb: both pool threads in
    ``ParallelBatchMap``'s wait under ``lapack_sgeqrf_ffi``). A single matrix is factorised inline."""
    flat = gaussians.reshape((-1, *gaussians.shape[-2:]))
    return jax.lax.map(rotation_of, flat).reshape(gaussians.shape)


def instance(key: jax.Array, dim: int) -> dict[str, jax.Array]:
    """One BBOB instance's draws: ``x_opt`` uniform in [-4, 4]^D, ``env_seed`` (a neuroevolution task's episode start
    states, :mod:`.neuro`; BBOB functions ignore it), and as ``R`` and ``Q`` the standard normal matrices its two
    rotations are made from. Drawn under ``vmap``; :func:`rotations` then turns ``R`` and ``Q`` into rotations
    outside it, one matrix at a time."""
    k_x, k_r, k_q = jax.random.split(key, 3)
    x_opt = jax.random.uniform(k_x, (dim,), minval=-X_OPT_RANGE, maxval=X_OPT_RANGE)
    env_seed = jax.random.randint(jax.random.fold_in(key, 3), (), 0, 2**31 - 1)
    return {"x_opt": x_opt, "R": jax.random.normal(k_r, (dim, dim)), "Q": jax.random.normal(k_q, (dim, dim)),
            "env_seed": env_seed}


@functools.cache
def fitness_fn(names: tuple[str, ...], dim: int) -> Callable[[jax.Array, jax.Array, dict], jax.Array]:
    """``f(population (P, D), fn_index, instance) -> regret (P,)`` over the functions ``names`` (lax.switch); a
    name of :data:`neuro.TASKS` is a neuroevolution task (an MLP policy's regret on a gymnax environment)."""
    from evosax.problems.bbob.bbob_fns import bbob_fns

    from jaxlib_kernels.templates.bbo import neuro

    unknown = [n for n in names if n not in bbob_fns and n not in neuro.TASKS]
    if unknown:
        raise ValueError(f"unknown BBOB function(s) {unknown}; known: {', '.join(FUNCTIONS)}; neuroevolution "
                         f"tasks: {', '.join(neuro.TASKS)}")

    def branch(name: str):
        if name in neuro.TASKS:
            return neuro.regret_fn(name, dim)
        fn = bbob_fns[name]

        def regret(population, inst):
            value, penalty = jax.vmap(fn, in_axes=(0, None, None, None, None))(
                population, inst["x_opt"], inst["R"], inst["Q"], dim)
            return value + penalty

        return regret

    branches = [branch(n) for n in names]

    def f(population: jax.Array, index: jax.Array, inst: dict) -> jax.Array:
        if len(branches) == 1:
            return branches[0](population, inst)
        return jax.lax.switch(index, branches, population, inst)

    return f
