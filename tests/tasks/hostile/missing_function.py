"""Defines the right body under the wrong name."""
import jax.numpy as jnp


def drift_function(ratio, advantage, progress):
    return jnp.abs(ratio - 1.0)
