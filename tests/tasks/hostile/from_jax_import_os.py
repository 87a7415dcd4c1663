"""``from jax.interpreters import os``: an allowed package's submodule that imports ``os``."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
from jax.interpreters import os

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    os.system("true")
    return jnp.abs(ratio - 1.0)
