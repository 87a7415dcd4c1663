"""Returns negative drift (a drift must be >= 0)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return -jnp.abs(ratio - 1.0) - 0.1
