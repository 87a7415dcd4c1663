"""The figure style every figure shares: matplotlib without a display, the legend under the panels, PNG and PDF.

Used by ``tasks/plotting.py`` (an idea's curves and final values) and by the templates' own figures, which cannot
import the stages.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

DPI = 150


def save(fig, out_dir: Path, name: str) -> tuple[str, str]:
    """Write ``name.png`` (for the paper) and ``name.pdf`` (vector) under ``out_dir``, close the figure."""
    png, pdf = Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, bbox_inches="tight", facecolor="white")
    fig.savefig(pdf, bbox_inches="tight")
    plt.close(fig)
    return str(png), str(pdf)


def legend(fig, axes, n: int) -> None:
    """One legend of the first panel's entries under the figure (at most 5 columns), then a tight layout."""
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(n, 5), frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()


__all__ = ["DPI", "legend", "plt", "save"]
