"""Replaces ``jnp.abs`` for everyone in the process (every later candidate and baseline would use it)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp

jnp.abs = lambda x: x * 0.0


def drift(ratio, advantage, progress):
    return jnp.abs(ratio - 1.0)
