"""An Evolution Transformer (Lange et al., 2024), small and ours: the model, its step, and the pretrained weights.

Architecture (:func:`encode`, :func:`decide`, :func:`step`), with the paper's invariances: every dimension is
processed by the same weights (equivariant to the order of dimensions); within a generation the members of one
dimension are encoded from their normalised offsets ``z = (x - m) / sigma`` and centred fitness ranks and pooled by
attention over members (invariant to their order); across generations a causal self-attention layer over a window
of the last ``window`` pooled generation tokens (per dimension) gives the update. Heads: the mean step in units of
sigma and the log-std change, ``m' = m + sigma * dm``, ``sigma' = sigma * exp(ds)``. With ``window`` pooled tokens as
the carried state it runs in any ES loop of ``(init, ask, tell)`` strategies (:meth:`EvoTF.strategy`), and on the
host through the sequence-optimiser interface (:class:`EvoTFOptimiser`).

:func:`pretrained`: the weights trained by Evolutionary Algorithm Distillation on BBOB functions (what trained them
is written in the file, ``meta_trained_by`` and ``meta_config``), the default model of
:func:`jaxlib_kernels.optimisers.tune`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlib_kernels.optimisers.sequence import STD_RANGE, Tracking

PRETRAINED = Path(__file__).with_name("evotf_ead.npz")


def init_params(key: jax.Array, width: int) -> dict:
    ks = jax.random.split(key, 8)

    def dense(k, i, o):
        return {"w": jax.random.normal(k, (i, o)) * (1.0 / np.sqrt(i)), "b": jnp.zeros(o)}

    return {"enc1": dense(ks[0], 4, width), "enc2": dense(ks[1], width, width), "pool": dense(ks[2], width, 1),
            "q": dense(ks[3], width, width), "k": dense(ks[4], width, width), "v": dense(ks[5], width, width),
            "out": dense(ks[6], 2 * width, width), "head": {"w": jnp.zeros((width, 2)), "b": jnp.zeros(2)},
            "pos": jax.random.normal(ks[7], (64, width)) * 0.1}


def _d(p, x):
    return x @ p["w"] + p["b"]


def encode(params: dict, pop, fitness, mean, std) -> jax.Array:
    """One generation -> a token per dimension (D, width): member encodings pooled by attention over members."""
    P = fitness.shape[0]
    ranks = jnp.argsort(jnp.argsort(fitness)).astype(jnp.float32)
    u = 0.5 - ranks / jnp.maximum(P - 1, 1)  # centred ranks, best +0.5
    z = (pop - mean) / std  # (P, D)
    feats = jnp.stack([z, jnp.broadcast_to(u[:, None], z.shape), z * u[:, None], z ** 2 - 1.0], axis=-1)  # (P,D,4)
    h = jnp.tanh(_d(params["enc2"], jnp.tanh(_d(params["enc1"], feats))))  # (P, D, W)
    a = jax.nn.softmax(_d(params["pool"], h)[..., 0], axis=0)  # over members
    return jnp.sum(a[..., None] * h, axis=0)  # (D, W)


def decide(params: dict, window: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Causal attention of the newest token over the window (D, K, W) -> (dm, ds) per dimension."""
    K = window.shape[1]
    x = window + params["pos"][:K]
    q = _d(params["q"], x[:, -1])  # (D, W): the newest token queries
    k = _d(params["k"], x)
    v = _d(params["v"], x)
    logits = jnp.einsum("dw,dkw->dk", q, k) / np.sqrt(x.shape[-1])
    logits = jnp.where(valid[None, :], logits, -1e9)
    ctx = jnp.einsum("dk,dkw->dw", jax.nn.softmax(logits, axis=-1), v)
    h = jnp.tanh(_d(params["out"], jnp.concatenate([ctx, x[:, -1]], axis=-1)))
    out = _d(params["head"], h)
    return 2.0 * jnp.tanh(out[:, 0] / 2.0), jnp.clip(out[:, 1], -1.0, 1.0)


def step(params: dict, window, valid, pop, fitness, mean, std):
    """Push this generation's token into the window; the next (mean, std) and the new window."""
    token = encode(params, pop, fitness, mean, std)
    window = jnp.concatenate([window[:, 1:], token[:, None]], axis=1)
    valid = jnp.concatenate([valid[1:], jnp.ones(1, bool)])
    dm, ds = decide(params, window, valid)
    return mean + std * dm, std * jnp.exp(ds), window, valid


class EvoTF:
    """The trained model as a strategy of the kernel's ES loop (state: mean, std, the window of tokens)."""

    def __init__(self, params: dict, window: int, name: str = "evotf"):
        self.params, self.window, self.name = params, window, name

    def __repr__(self) -> str:
        return f"EvoTF({self.name})"

    def strategy(self, population: int, dim: int):
        params, K = self.params, self.window
        width = params["enc2"]["w"].shape[1]

        def init(key, mean, std):
            return {"mean": mean, "std": std, "window": jnp.zeros((dim, K, width)), "valid": jnp.zeros(K, bool),
                    "repairs": jnp.int32(0)}

        def ask(key, z, state):
            return state["mean"] + state["std"] * z, state

        def tell(key, pop, fitness, state, progress):
            m, s, w, v = step(params, state["window"], state["valid"], pop, fitness, state["mean"], state["std"])
            s = jnp.clip(s, *STD_RANGE)
            return {**state, "mean": m, "std": s, "window": w, "valid": v}

        return init, ask, tell




class EvoTFOptimiser(Tracking):
    """An Evolution Transformer (:class:`EvoTF`) through the sequence-optimiser interface: the window of the last
    ``model.window`` generation tokens is built from the history as it grows (one jitted :func:`step` per new
    generation, compiled once per (population, dimension)), the next distribution is the model's, std clipped to
    :data:`~.sequence.STD_RANGE`."""

    name = "evotf"

    def __init__(self, model: EvoTF):
        self.model = model

    def _reset(self):
        self._window = None

    def _update(self, pop, fit, mean, std):
        D = pop.shape[1]
        if self._window is None:
            width = self.model.params["enc2"]["w"].shape[1]
            self._window = (jnp.zeros((D, self.model.window, width), jnp.float32),
                            jnp.zeros(self.model.window, bool))
        f32 = np.float32
        m, s, w, v = _jitted_step(self.model.params, *self._window, pop.astype(f32), fit.astype(f32),
                                  mean.astype(f32), std.astype(f32))
        self._window = (w, v)
        return np.asarray(m, dtype=np.float64), np.clip(np.asarray(s, dtype=np.float64), *STD_RANGE)


_jitted_step = jax.jit(step)


def save(model: EvoTF, path: Path, **meta: str) -> Path:
    """Write a model's weights (the leaves of :func:`init_params`'s tree, in order), width, window, name and
    ``meta`` text (e.g. how it was trained)."""
    leaves = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(model.params))}
    np.savez(path, width=np.int64(model.params["enc2"]["w"].shape[1]), window=np.int64(model.window),
             name=np.str_(model.name), **{f"meta_{k}": np.str_(v) for k, v in meta.items()}, **leaves)
    return Path(path)


def load(path: Path) -> EvoTF:
    """The model :func:`save` wrote."""
    with np.load(path) as data:
        tree = jax.tree.structure(init_params(jax.random.key(0), int(data["width"])))
        leaves = [jnp.asarray(data[f"p{i}"]) for i in range(tree.num_leaves)]
        return EvoTF(jax.tree.unflatten(tree, leaves), int(data["window"]), str(data["name"]))


@functools.cache
def pretrained() -> EvoTF:
    """The EAD-trained model shipped with the library (:data:`PRETRAINED`)."""
    return load(PRETRAINED)
