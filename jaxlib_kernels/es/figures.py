"""Figures of ES meta-training (matplotlib, Agg), kernel-level so the templates' ``Meta`` figures use the same
helpers: :func:`pyplot`, :func:`save` (PNG and PDF) and :func:`plot_fitness` (every search's fitness curve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxlib_kernels.stats import summarize


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out_dir: Path, name: str) -> tuple[str, str]:
    """``fig`` as ``<out_dir>/<name>.png`` and ``.pdf``; closes it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=150, bbox_inches="tight", facecolor="white")
    fig.savefig(pdf, bbox_inches="tight")
    pyplot().close(fig)
    return str(png), str(pdf)


def plot_fitness(curves: dict[str, dict], out_dir: Path, ylabel: str = "return",
                 centers: dict[str, list[dict]] | None = None) -> dict:
    """ES fitness per generation of each search: population mean (line), population max (dashed), best so far,
    and the search centre on fixed keys with 95% CIs (markers) where evaluated."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for i, (name, m) in enumerate(curves.items()):
        g = np.arange(1, len(m["return_mean"]) + 1)
        color = f"C{i}"
        ax.plot(g, m["return_mean"], color=color, label=f"{name}: population mean")
        ax.plot(g, m["return_max"], color=color, ls="--", lw=1, label=f"{name}: population max")
        ax.plot(g, m["best_return"], color=color, ls=":", lw=1, label=f"{name}: best so far")
        if centers and centers.get(name):
            stats = [summarize(np.asarray(c["returns"])) for c in centers[name]]
            gens = [c["generation"] for c in centers[name]]
            mean = np.array([s["mean"] for s in stats])
            err = np.array([[s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]] for s in stats]).T
            ax.errorbar(gens, mean, yerr=np.nan_to_num(err), fmt="o", color=color, ms=4, capsize=2,
                        label=f"{name}: search centre, fixed seeds (95% CI)")
    ax.set_xlabel("ES generation")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    png, pdf = save(fig, Path(out_dir), "es_fitness")
    return {"name": "es_fitness", "png": png, "pdf": pdf,
            "caption": "ES meta-training: mean and max return of each generation's population (each generation "
                       "sees one shared random key), the best so far, and the search centre's return on fixed seeds."}
