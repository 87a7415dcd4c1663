"""The ``lpo`` template's extra figure: the drift's shape over the probability ratio, candidate and baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DRIFT_R = (0.5, 2.0)


def evaluate_drift(source: str, ratio: np.ndarray, advantage: float, progress: float) -> np.ndarray:
    """Values of the plug-in ``drift`` in ``source`` over ``ratio`` at one advantage and progress."""
    import jax.numpy as jnp

    from jaxlib_kernels import plugin

    fn = plugin.load_plugin(source, "drift")
    r = jnp.asarray(ratio, dtype=jnp.float32)
    out = fn(r, jnp.full_like(r, advantage), jnp.float32(progress))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), ratio.shape).copy()


def drift_shape(*, sources: dict[str, str], methods: list[str], colors: dict, labels: dict, out_dir: Path,
                **_) -> list[dict]:
    """``drift_shape.png/pdf``: D(r, A, n/N) over r at A = +1 and A = -1, solid at n/N = 0, dashed at n/N = 1."""
    from jaxlib_kernels.figures import legend, save, subplots

    ratio = np.linspace(*DRIFT_R, 301)
    fig, axes = subplots(1, 2, 2.2)
    failed, temporal = [], []
    for ax, adv in zip(axes.flat, (1.0, -1.0), strict=True):
        for method in methods:
            if method not in sources:
                continue
            try:
                d0 = evaluate_drift(sources[method], ratio, adv, 0.0)
                d1 = evaluate_drift(sources[method], ratio, adv, 1.0)
            except Exception:  # noqa: BLE001 - any failure of untrusted code is reported in the caption
                if method not in failed:
                    failed.append(method)
                continue
            lw = 1.8 if method == methods[-1] else 1.1
            ax.plot(ratio, d0, color=colors[method], lw=lw, label=labels.get(method, method))
            if np.max(np.abs(d1 - d0)) > 1e-7:
                ax.plot(ratio, d1, color=colors[method], lw=lw, ls="--")
                if method not in temporal:
                    temporal.append(method)
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"A = {adv:+.0f}")
        ax.set_xlabel("probability ratio r")
        ax.set_ylabel("drift D(r, A, n/N)")
        ax.grid(alpha=0.3)
    legend(fig, axes, len(methods))
    png, pdf = save(fig, Path(out_dir), "drift_shape")
    cand = methods[-1]
    caption = (
        f"Drift D(r, A, n/N) over the probability ratio r in [{DRIFT_R[0]}, {DRIFT_R[1]}] for a positive (A = +1, "
        f"left) and a negative (A = -1, right) advantage: the candidate {labels.get(cand, cand)} and the baselines. "
        "Solid lines: start of training (n/N = 0); "
        + (f"dashed lines: end of training (n/N = 1), drawn for the drifts that depend on progress "
           f"({', '.join(labels.get(m, m) for m in temporal)})." if temporal
           else "no drift shown depends on training progress, so n/N = 1 coincides with n/N = 0.")
        + (f" Could not be evaluated: {', '.join(labels.get(m, m) for m in failed)}." if failed else "")
    )
    return [{"name": "drift_shape", "png": png, "pdf": pdf, "caption": caption, "width_in": fig.get_figwidth()}]
