"""Calls ``eval`` on a string."""
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return eval("jnp.abs(ratio - 1.0)")
