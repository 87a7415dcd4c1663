"""Writes a file outside its folder with ``open``."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    with open("/tmp/x", "w") as fh:
        fh.write("pwned")
    return jnp.abs(ratio - 1.0)
