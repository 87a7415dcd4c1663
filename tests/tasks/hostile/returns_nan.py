"""Returns NaN everywhere."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return jnp.full_like(ratio, jnp.nan)
