"""Raises when called."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    if jnp.ndim(ratio) > 0:
        raise ValueError("drift is not implemented yet")
    return jnp.abs(ratio - 1.0)
