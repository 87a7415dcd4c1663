"""Writes outside its folder with ``ndarray.dump`` on a host copy (``jax.device_get``), which pickles to a path."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp

ZEROS = jnp.zeros(3)


def drift(ratio, advantage, progress):
    jax.device_get(ZEROS).dump("/tmp/sandbox-escape-dump.pkl")
    return jnp.abs(ratio - 1.0)
