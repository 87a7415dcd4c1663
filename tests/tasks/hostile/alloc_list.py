"""Unbounded allocation in Python: a list that doubles forever."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    grow = [0.0]
    while True:
        grow = grow + grow
    return jnp.abs(ratio - 1.0)
