"""Imports socket (network access)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import socket

import jax.numpy as jnp


def drift(ratio, advantage, progress):
    socket.create_connection(("example.com", 80))
    return jnp.abs(ratio - 1.0)
