"""``from os import path``."""
from os import path

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    path.exists("/etc/passwd")
    return jnp.abs(ratio - 1.0)
