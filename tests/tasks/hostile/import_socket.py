"""Imports socket (network access)."""
import socket

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    socket.create_connection(("example.com", 80))
    return jnp.abs(ratio - 1.0)
