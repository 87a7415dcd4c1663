"""An endless Python loop while tracing."""
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    while True:
        pass
    return jnp.abs(ratio - 1.0)
