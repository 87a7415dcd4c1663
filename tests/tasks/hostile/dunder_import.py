"""``__import__('os')`` inside the function."""
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    __import__("os").system("true")
    return jnp.abs(ratio - 1.0)
