"""Reaches the ctypes module through a host array's ``.ctypes._ctypes`` and calls libc's ``system``."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp

ZEROS = jnp.zeros(3)


def drift(ratio, advantage, progress):
    jax.device_get(ZEROS).ctypes._ctypes.CDLL(None).system(b"touch /tmp/sandbox-escape-ctypes.txt")
    return jnp.abs(ratio - 1.0)
