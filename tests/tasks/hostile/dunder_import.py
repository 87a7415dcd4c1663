"""``__import__('os')`` inside the function."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    __import__("os").system("true")
    return jnp.abs(ratio - 1.0)
