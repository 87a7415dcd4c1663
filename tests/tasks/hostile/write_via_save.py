"""Writes outside its folder without ``open``: ``jnp.save`` to an absolute path (static check cannot see it)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp

TARGET = "/tmp/sandbox-escape-probe"


def drift(ratio, advantage, progress):
    jnp.save(TARGET, jnp.zeros(3))
    return jnp.abs(ratio - 1.0)
