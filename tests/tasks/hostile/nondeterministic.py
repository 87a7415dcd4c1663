"""Non-deterministic: a host callback adds a counter that grows on every call."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp


def drift(ratio, advantage, progress, calls=[0.0]):
    def bump(a):
        calls[0] = calls[0] + 1.0
        return a * 0.0 + calls[0]

    noise = jax.pure_callback(bump, jax.ShapeDtypeStruct(advantage.shape, advantage.dtype), advantage)
    return jnp.abs(ratio - 1.0) + noise
