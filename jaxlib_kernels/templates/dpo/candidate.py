"""The ``dpo`` template's gate checks and behaviour probe for ``preference_loss(rho, beta)`` plug-ins.

The probe is what training sees of a loss: its gradient with respect to the margin, ``d loss / d rho``, divided by
beta (for a loss of ``z = beta * rho`` alone that is ``l'(z)``), on a grid of rho at two betas. The grid is passed
as one batch, so losses that use batch statistics are probed on a fixed, known batch. Distances are RMS
differences in units of DPO's RMS gradient on the same grid.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# the probe grid and units are the preference language's
from jaxlib_kernels.search.preference import NOVELTY_THRESHOLD, PROBE_BETAS, PROBE_RHO, PROBE_SCALE  # noqa: F401


def probe(loss: Callable) -> np.ndarray:
    """``d loss / d rho / beta`` on the probe grid (rho x two betas), flattened; one compiled program."""
    betas = jnp.asarray(PROBE_BETAS, jnp.float32)
    grad = jax.vmap(jax.grad(lambda r, b: jnp.sum(loss(r, b))), in_axes=(None, 0))
    out = jax.jit(grad)(jnp.asarray(PROBE_RHO, jnp.float32), betas)
    return (np.asarray(out, dtype=np.float64) / np.asarray(PROBE_BETAS)[:, None]).reshape(-1)


EDGE_RHO = (-60.0, -5.0, 0.0, 5.0, 60.0)
EDGE_BETAS = (0.025, 0.25)


def check(loss: Callable, key: jax.Array) -> list[str]:
    """Problems of a preference loss on random margins: shape, finiteness, gradient, determinism. Empty = fine.

    Everything is computed by one compiled program (so the gate compiles once per candidate), run twice.
    """
    rho = 20.0 * jax.random.normal(key, (64,))
    edge = jnp.asarray(EDGE_RHO, jnp.float32)

    def everything(rho, beta, edge, edge_betas):
        out = loss(rho, beta)
        grad = jax.grad(lambda r: jnp.mean(loss(r, beta)))(rho)
        edge_out = jax.vmap(lambda b: jnp.broadcast_to(loss(edge, b), edge.shape) if jnp.shape(loss(edge, b)) in (
            (), edge.shape) else jnp.full(edge.shape, jnp.nan), in_axes=0)(edge_betas)
        edge_grad = jax.vmap(jax.grad(lambda r, b: jnp.sum(loss(r, b))), in_axes=(None, 0))(edge, edge_betas)
        return out, grad, edge_out, edge_grad

    fn = jax.jit(everything)
    args = (rho, jnp.float32(0.1), edge, jnp.asarray(EDGE_BETAS, jnp.float32))
    try:
        out, grad, edge_out, edge_grad = (jnp.asarray(x) for x in fn(*args))
    except Exception as exc:  # noqa: BLE001 - the reason goes back to whoever wrote the loss
        return [f"raised {type(exc).__name__} on rho of shape (64,) and a scalar beta: {exc}"]
    if out.shape != rho.shape:
        return [f"returned shape {tuple(out.shape)}, expected {tuple(rho.shape)} (one loss per pair, rho's shape)"]
    if not bool(jnp.all(jnp.isfinite(out))):
        return [f"returned non-finite values ({int((~jnp.isfinite(out)).sum())} of {out.size} are NaN or inf)"]
    problems: list[str] = []
    if not bool(jnp.all(jnp.isfinite(grad))):
        problems.append("gradient with respect to rho is not finite")
    elif float(jnp.max(jnp.abs(grad))) == 0.0:
        problems.append("gradient with respect to rho is zero everywhere: the loss cannot train the policy")
    if not bool(jnp.array_equal(out, jnp.asarray(fn(*args)[0]))):
        problems.append("not deterministic: two calls on the same inputs differ")
    if not bool(jnp.all(jnp.isfinite(edge_out))):
        problems.append(f"non-finite or misshapen output at margins rho in [-60, 60] with beta in {EDGE_BETAS}")
    elif not bool(jnp.all(jnp.isfinite(edge_grad))):
        problems.append(f"non-finite gradient at margins rho in [-60, 60] with beta in {EDGE_BETAS}")
    return problems
