"""Imports subprocess (runs programs)."""
import subprocess

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    subprocess.run(["true"])
    return jnp.abs(ratio - 1.0)
