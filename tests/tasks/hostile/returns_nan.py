"""Returns NaN everywhere."""
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    return jnp.full_like(ratio, jnp.nan)
