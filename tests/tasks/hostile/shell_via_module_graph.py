"""Runs a shell at load time past the AST check: ``jax.interpreters`` imports ``os``; as root it would remount ``/``
writable and write outside its folder."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax
import jax.numpy as jnp

TARGET = "/tmp/sandbox-escape-shell.txt"
jax.interpreters.os.system(f"mount -o remount,rw,bind / ; touch {TARGET}")


def drift(ratio, advantage, progress):
    return jnp.abs(ratio - 1.0)
