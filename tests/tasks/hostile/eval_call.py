"""Calls ``eval`` on a string."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return eval("jnp.abs(ratio - 1.0)")
