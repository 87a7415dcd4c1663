"""Does not parse."""
import jax.numpy as jnp


def drift(ratio, advantage, progress)
    return jnp.abs(ratio - 1.0)
