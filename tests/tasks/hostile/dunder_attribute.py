"""The classic escape: walk from a literal to ``object.__subclasses__()``."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    classes = ().__class__.__bases__[0].__subclasses__()
    return jnp.abs(ratio - 1.0) + 0.0 * len(classes)
