"""Defines the right body under the wrong name."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift_function(ratio, advantage, progress):
    return jnp.abs(ratio - 1.0)
