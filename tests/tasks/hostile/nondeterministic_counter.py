"""Non-deterministic past the AST check: a counter in a mutable default argument scales the drift.

Every trace sees a new count, but two calls of one jitted function see the same one (jit traces once)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress, calls=[0.0]):
    calls[0] = calls[0] + 1.0
    return jnp.abs(ratio - 1.0) * calls[0]
