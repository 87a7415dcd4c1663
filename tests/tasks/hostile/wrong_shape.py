"""Reduces to a scalar instead of keeping ratio's shape."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return jnp.mean(jnp.abs(ratio - 1.0))
