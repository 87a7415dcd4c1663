"""Finite values but a NaN gradient: the ``where``-over-``sqrt`` trap."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return jnp.where(ratio > 100.0, jnp.sqrt(ratio - 100.0), 0.0) + jnp.abs(ratio - 1.0)
