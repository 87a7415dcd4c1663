"""An endless Python loop while tracing."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    while True:
        pass
    return jnp.abs(ratio - 1.0)
