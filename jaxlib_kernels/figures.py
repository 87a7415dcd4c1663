"""The figure style every figure shares: drawn at the size it prints, fonts that print at 7-8 pt, colour-blind-safe
colours, the legend under the panels, PNG and PDF.

A figure is drawn ``width_in`` wide (the paper's text width by default) with constrained layout and saved at
exactly that size (no tight bounding box), so the writeup places it at ``width_in`` and its text prints at the size
it was drawn. Colours are Okabe and Ito's (2008) palette, told apart under the common colour-vision deficiencies.
Used by ``tasks/plotting.py`` (an idea's curves and final values) and by the templates' own figures, which cannot
import the stages.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from cycler import cycler

DPI = 200
TEXT_WIDTH_IN = 6.5  # the paper's text width (letter paper, 1 in margins)
FONT_PT = 8.0  # labels and titles; tick labels and legends one point smaller
# Okabe-Ito: the candidate vermillion, the baselines the rest (yellow last: faint on white)
CANDIDATE_COLOR = "#D55E00"
PALETTE = ["#0072B2", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]


def rc(font_pt: float = FONT_PT) -> dict:
    """The rcParams of the style at a base font size."""
    small = font_pt - 1
    return {"font.size": font_pt, "axes.titlesize": font_pt, "axes.labelsize": font_pt,
            "xtick.labelsize": small, "ytick.labelsize": small, "legend.fontsize": small,
            "figure.titlesize": font_pt, "lines.linewidth": 1.2, "axes.linewidth": 0.6,
            "xtick.major.width": 0.6, "ytick.major.width": 0.6, "axes.prop_cycle": cycler(color=PALETTE),
            "savefig.dpi": DPI, "pdf.fonttype": 42}


@contextmanager
def style(font_pt: float = FONT_PT):
    """Draw the figures of the block in the shared style at base font ``font_pt`` (a redraw passes a larger one)."""
    with plt.rc_context(rc(font_pt)):
        yield


def subplots(rows: int, cols: int, panel_height_in: float, width_in: float = TEXT_WIDTH_IN, **kw):
    """A figure ``width_in`` wide of rows x cols panels ``panel_height_in`` tall each, constrained layout."""
    return plt.subplots(rows, cols, figsize=(width_in, panel_height_in * rows + 0.35), squeeze=False,
                        layout="constrained", **kw)


SAVE_HOOKS: list = []  # callables (fig, name) run before a figure is saved (the stages' figure check)


def save(fig, out_dir: Path, name: str) -> tuple[str, str]:
    """Run the ``SAVE_HOOKS``, write ``name.png`` (for the paper) and ``name.pdf`` (vector) under ``out_dir`` at
    the figure's own size, close the figure."""
    for hook in SAVE_HOOKS:
        hook(fig, name)
    png, pdf = Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, facecolor="white")
    fig.savefig(pdf)
    plt.close(fig)
    return str(png), str(pdf)


def legend(fig, axes, n: int) -> None:
    """One legend of the first panel's entries under the panels, outside the data: as many columns (at most 4) as
    the longest entry lets fit in the figure's width."""
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        size = matplotlib.font_manager.FontProperties(size=plt.rcParams["legend.fontsize"]).get_size_in_points()
        column_in = (0.55 * max(len(s) for s in names) + 5.0) * size / 72  # text, handle, padding and spacing
        ncol = max(1, min(n, 4, int(fig.get_figwidth() // column_in)))
        fig.legend(handles, names, loc="outside lower center", ncol=ncol, frameon=False)


__all__ = ["CANDIDATE_COLOR", "DPI", "FONT_PT", "PALETTE", "SAVE_HOOKS", "TEXT_WIDTH_IN", "legend", "plt", "rc", "save", "style",
           "subplots"]
