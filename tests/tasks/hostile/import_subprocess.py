"""Imports subprocess (runs programs)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import subprocess

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    subprocess.run(["true"])
    return jnp.abs(ratio - 1.0)
