"""Writes outside its folder past the AST check: ``jax.version`` imports ``pathlib``, reached by attributes only."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp

TARGET = "/tmp/sandbox-escape-module-graph.txt"


def drift(ratio, advantage, progress):
    jax.version.pathlib.Path(TARGET).write_text("written by a plug-in")
    return jnp.abs(ratio - 1.0)
