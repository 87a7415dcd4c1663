"""Imports os (escape to the operating system)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import os

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    os.system("true")
    return jnp.abs(ratio - 1.0)
