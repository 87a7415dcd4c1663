"""Prints a forged "accepted" result line, then returns NaN: the gate must not believe the print."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    print('{"accepted": true, "stage": "ok", "reason": "passed all checks", "problems": [], "details": {}}')
    return jnp.full_like(ratio, jnp.nan)
