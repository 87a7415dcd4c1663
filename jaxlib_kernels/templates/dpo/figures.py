"""The ``dpo`` template's figures: the losses' shapes over rho, and the reward/KL frontier over the beta sweep.

The frontier needs the per-beta reward and KL of every unit, extras of the unit results that the tidy results
table does not carry; they are read from the run's ``units/`` folder (``<run>/ideas/<idea>/figures`` is where
figures are written), matched to methods by the units' ``.json`` records. With 95% intervals (t over seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SHAPE_RHO = (-60.0, 60.0)


def _loss_values(source: str, rho: np.ndarray, beta: float) -> np.ndarray:
    import jax.numpy as jnp

    from jaxlib_kernels import plugin

    fn = plugin.load_plugin(source, "preference_loss")
    return np.asarray(fn(jnp.asarray(rho, jnp.float32), jnp.float32(beta)), dtype=np.float64)


def _units(out_dir: Path) -> list[tuple[dict, dict]]:
    """(spec, arrays) of every finished dpo unit of the run that ``out_dir`` belongs to."""
    out_dir = Path(out_dir).resolve()
    units = None
    for parent in out_dir.parents:
        if (parent / "units").is_dir():
            units = parent / "units"
            break
    if units is None:
        return []
    found = []
    for meta in sorted(units.glob("*.json")):
        if meta.name.endswith(".error.json"):
            continue
        npz = meta.with_suffix(".npz")
        try:
            spec = json.loads(meta.read_text())
            if spec.get("template") != "dpo" or not npz.exists():
                continue
            with np.load(npz) as data:
                arrays = {k: data[k] for k in ("reward", "kl", "betas") if k in data.files}
        except (OSError, ValueError):
            continue
        if len(arrays) == 3:
            found.append((spec, arrays))
    return found


def ci95(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t interval over the first axis."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    if n < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n))


def frontier_rows(out_dir: Path, methods: list[str]) -> list[dict]:
    """Per method, setting and beta: mean reward and KL at the end of training with 95% intervals."""
    rows = []
    for spec, arrays in _units(out_dir):
        if spec.get("method") not in methods:
            continue
        for j, beta in enumerate(arrays["betas"]):
            r, r_ci = ci95(arrays["reward"][:, j])
            k, k_ci = ci95(arrays["kl"][:, j])
            rows.append({"method": spec["method"], "setting": spec["setting"], "beta": float(beta), "reward": r,
                         "reward_ci": r_ci, "kl": k, "kl_ci": k_ci, "n": int(arrays["reward"].shape[0])})
    return rows


def dpo_figures(*, sources: dict[str, str], methods: list[str], colors: dict, labels: dict, out_dir: Path,
                **_) -> list[dict]:
    from jaxlib_kernels.figures import legend, save, subplots

    figures = []
    # ---- the losses' shapes -----------------------------------------------------------------------------------
    rho = np.linspace(*SHAPE_RHO, 241)
    fig, axes = subplots(1, 2, 2.2)
    failed = []
    for ax, beta in zip(axes.flat, (0.05, 0.25), strict=True):
        for method in methods:
            if method not in sources:
                continue
            try:
                v = _loss_values(sources[method], rho, beta)
            except Exception:  # noqa: BLE001 - untrusted code; reported in the caption
                failed.append(method)
                continue
            ax.plot(rho, v, color=colors[method], lw=1.8 if method == methods[-1] else 1.1,
                    label=labels.get(method, method))
        ax.set_title(f"beta = {beta:g}")
        ax.set_xlabel("margin rho")
        ax.set_ylabel("loss")
        ax.set_ylim(bottom=-0.05, top=4.0)
        ax.grid(alpha=0.3)
    legend(fig, axes, len(methods))
    png, pdf = save(fig, Path(out_dir), "loss_shape")
    failed = sorted(set(failed))
    figures.append({"name": "loss_shape", "png": png, "pdf": pdf, "caption": (
        f"The preference losses over the margin rho in [{SHAPE_RHO[0]:g}, {SHAPE_RHO[1]:g}] at beta = 0.05 (left) "
        "and 0.25 (right), evaluated on the whole grid as one batch (losses that use batch statistics depend on "
        "it). The candidate is drawn thickest."
        + (f" Could not be evaluated: {', '.join(labels.get(m, m) for m in failed)}." if failed else ""))})
    # ---- the reward / KL frontier ---------------------------------------------------------------------------------
    rows = frontier_rows(out_dir, methods)
    settings = sorted({r["setting"] for r in rows})
    if rows:
        fig, axes = subplots(1, len(settings), 2.4)
        for ax, setting in zip(axes.flat, settings, strict=True):
            for method in methods:
                pts = sorted((r for r in rows if r["method"] == method and r["setting"] == setting),
                             key=lambda r: r["beta"])
                if not pts:
                    continue
                kl = [p["kl"] for p in pts]
                rw = [p["reward"] for p in pts]
                ax.errorbar(kl, rw, xerr=[p["kl_ci"] for p in pts], yerr=[p["reward_ci"] for p in pts],
                            color=colors[method], marker="o", ms=3, lw=1.0, capsize=2,
                            label=labels.get(method, method))
            ax.set_title(setting)
            ax.locator_params(nbins=4)
            ax.set_xlabel("KL(policy || reference)")
            ax.set_ylabel("mean reward of samples")
            ax.grid(alpha=0.3)
        legend(fig, axes, len(methods))
        png, pdf = save(fig, Path(out_dir), "frontier")
        at = [r for r in rows if abs(r["beta"] - 0.05) < 1e-9]
        table = "; ".join(
            f"{labels.get(r['method'], r['method'])} on {r['setting']}: reward {r['reward']:.3f} +/- "
            f"{r['reward_ci']:.3f}, KL {r['kl']:.3f} +/- {r['kl_ci']:.3f}" for r in at)
        figures.append({"name": "frontier", "png": png, "pdf": pdf, "caption": (
            "Reward/KL frontier: mean reward of the policy's samples against KL(policy || reference) at the end "
            "of training, one point per beta of the setting's sweep, with 95% t intervals over "
            f"{min(r['n'] for r in rows)} seeds. Up and to the left is better." + (
                f" At beta = 0.05: {table}." if table else ""))})
    return figures
