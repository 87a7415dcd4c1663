"""``from os import path``."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
from os import path

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    path.exists("/etc/passwd")
    return jnp.abs(ratio - 1.0)
