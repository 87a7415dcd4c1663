"""Non-deterministic past the AST check: ``jax.random`` noise from a key made from a module-level counter."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp

CALLS = [0]


def drift(ratio, advantage, progress):
    CALLS.append(len(CALLS))
    noise = jax.random.uniform(jax.random.key(len(CALLS)), jnp.shape(ratio))
    return jnp.abs(ratio - 1.0) + 0.01 * noise
