"""Escapes through ``getattr`` with a dunder name in a string."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    namespace = getattr(jnp, "__dict__")
    return namespace["abs"](ratio - 1.0)
