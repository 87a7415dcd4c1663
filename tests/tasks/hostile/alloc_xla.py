"""Unbounded allocation in XLA: a 4 TiB array, materialised eagerly while tracing."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    with jax.ensure_compile_time_eval():
        big = jnp.ones((1 << 40,))
    return jnp.abs(ratio - 1.0) + big[0] * 0.0
