"""Reduces to a scalar instead of keeping ratio's shape."""
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return jnp.mean(jnp.abs(ratio - 1.0))
