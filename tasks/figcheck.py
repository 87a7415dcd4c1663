"""The objective figure and page check of a paper (issue 28): what a referee sees without reading a word.

Figure checks read a drawn matplotlib ``Figure`` (text size as printed, overlapping or clipped text, empty axes,
several series without a legend, a legend over data, seeds without an interval, colours a colour-blind reader cannot
tell apart); paper checks read the compiled PDF with pymupdf and the .tex (a figure never cited, the same figure
twice, figure and table text printed below the minimum size, a page much emptier than a text page). Journal figure
guides ask for 5-7 pt text at final size; we ask for ``MIN_PT``.

A finding is ``{"check", "severity": "error" | "warning", "target", "message"}``. Every paper check has the
signature ``check(paper_dir, tex, pdf, context) -> list[finding]`` so other checks (the text gate, the claims
check) run in the same loop (:func:`tasks.writeup.write_paper_loop`).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MIN_PT = 6.0
MAX_BLANK = 0.35  # the largest blank fraction of a page's text block, the last page excepted
TEXT_BLOCK = (72.0, 72.0, 72.0, 72.0)  # left, top, right, bottom margins of the paper (geometry margin=1in), pt
MIN_CVD_DISTANCE = 0.15  # the smallest distance of two series' colours as a colour-blind reader sees them (sRGB 0-1)

Finding = dict[str, str]
Check = Callable[[Path, str, Path, dict], list[Finding]]


def finding(check: str, severity: str, target: str, message: str) -> Finding:
    return {"check": check, "severity": severity, "target": target, "message": message}


# ------------------------------------------------------------------------------------------ a drawn matplotlib figure
def _texts(fig) -> list:
    """Every text the figure draws (titles, labels, tick labels in view, legends, annotations), not empty."""
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                labels = (tick.label1, tick.label2)
                ticks.update(id(t) for t in labels)
                if ax.get_visible() and lo - tol <= tick.get_loc() <= hi + tol:
                    shown += [t for t in labels if t.get_visible()]
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text") and hasattr(a, "get_fontsize"))
             if id(t) not in ticks and t.get_visible() and (t.axes is None or t.axes.get_visible())]
    return [t for t in texts + shown if t.get_text().strip()]


def _series(ax) -> list:
    """The data artists of an axes: lines with data (not reference lines), collections, bars, images."""
    lines = [ln for ln in ax.get_lines() if len(np.atleast_1d(ln.get_xdata())) > 2 or ln.get_marker() not in
             (None, "None", "", " ")]
    return lines + [c for c in ax.collections if len(c.get_offsets()) or len(c.get_paths())] + \
        [p for p in ax.patches if p.get_height() != 0] + list(ax.images)


def _legend_of(fig, ax):
    return ax.get_legend() or next(iter(fig.legends), None)


def _rgb(color) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.asarray(to_rgb(color), dtype=float)


# Machado, Oliveira and Fernandes (2009), severity 1.0, applied to linear RGB: the two red-green deficiencies, almost
# every colour-blind reader
CVD = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}


def cvd_distance(a, b) -> float:
    """The smallest distance of two colours under simulated protanopia and deuteranopia (sRGB 0-1)."""
    def lin(c):
        return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)

    def srgb(c):
        c = np.clip(c, 0, 1)
        return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)

    ra, rb = lin(_rgb(a)), lin(_rgb(b))
    return float(min(np.linalg.norm(srgb(m @ ra) - srgb(m @ rb)) for m in CVD.values()))


def check_figure(fig, name: str, placed_width_in: float | None = None, n_seeds: int | None = None) -> list[Finding]:
    """Findings of a drawn figure printed ``placed_width_in`` wide (default: its own width), with ``n_seeds``
    seeds behind its curves or bars (None: not known, the interval check is skipped)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width_in = fig.get_figwidth()
    scale = (placed_width_in or width_in) / width_in
    out: list[Finding] = []
    texts = _texts(fig)
    small = sorted({round(t.get_fontsize() * scale, 1) for t in texts if t.get_fontsize() * scale < MIN_PT})
    if small:
        out.append(finding("text_size", "error", name, f"text prints at {small[0]} pt (< {MIN_PT:g} pt): drawn "
                           f"{width_in:.2f} in wide, placed {placed_width_in or width_in:.2f} in wide"))
    boxes = [(t, t.get_window_extent(renderer)) for t in texts]
    frame = fig.bbox
    for t, box in boxes:
        if box.x0 < frame.x0 - 1 or box.x1 > frame.x1 + 1 or box.y0 < frame.y0 - 1 or box.y1 > frame.y1 + 1:
            out.append(finding("clipped_text", "error", name, f"text {t.get_text()!r} runs off the figure"))
    for (t1, b1), (t2, b2) in itertools.combinations(boxes, 2):
        if b1.overlaps(b2) and _overlap_area(b1, b2) > 0.15 * min(b1.width * b1.height, b2.width * b2.height):
            out.append(finding("overlapping_text", "error", name,
                               f"texts {t1.get_text()!r} and {t2.get_text()!r} overlap"))
    for i, ax in enumerate(a for a in fig.axes if a.get_visible()):
        target = f"{name}[{i}]"
        series = _series(ax)
        if not series:
            out.append(finding("empty_axes", "error", target, "a panel with no data"))
            continue
        labelled = {ln.get_label() for ln in ax.get_lines() + list(ax.collections) + list(ax.containers)
                    if not str(ln.get_label()).startswith("_")}
        legend = _legend_of(fig, ax)
        n_lines = len([ln for ln in ax.get_lines() if len(np.atleast_1d(ln.get_xdata())) > 2])
        if (n_lines >= 2 or len(labelled) >= 2) and legend is None:
            out.append(finding("no_legend", "error", target, f"{max(n_lines, len(labelled))} series and no legend"))
        if legend is not None and legend.axes is ax:
            lb = legend.get_window_extent(renderer)
            covered = sum(int(lb.contains(*p)) for p in _points(ax))
            if covered:
                out.append(finding("legend_over_data", "warning", target,
                                   f"the legend covers {covered} data points"))
        if n_seeds is not None and n_seeds >= 2 and not _has_interval(ax):
            out.append(finding("no_interval", "error", target,
                               f"{n_seeds} seeds behind the data and no interval drawn"))
        colors = list(dict.fromkeys(_hex(ln.get_color()) for ln in ax.get_lines()
                                    if not str(ln.get_label()).startswith("_")))
        for a, b in itertools.combinations(colors, 2):
            if cvd_distance(a, b) < MIN_CVD_DISTANCE:
                out.append(finding("colour_blind", "warning", target,
                                   f"colours {a} and {b} look alike to a colour-blind reader"))
    return out


def _hex(color) -> str:
    from matplotlib.colors import to_hex

    return to_hex(color)


def _overlap_area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0) * max(h, 0)


def _points(ax) -> list[tuple[float, float]]:
    """Display coordinates of the axes' data points (line vertices and scatter offsets)."""
    pts = []
    for ln in ax.get_lines():
        xy = np.column_stack([np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)])
        pts += [tuple(p) for p in ax.transData.transform(xy[np.isfinite(xy).all(axis=1)])]
    for c in ax.collections:
        offsets = np.asarray(c.get_offsets(), float)
        if offsets.size and offsets.ndim == 2 and c.get_offset_transform() is ax.transData:
            pts += [tuple(p) for p in ax.transData.transform(offsets[np.isfinite(offsets).all(axis=1)])]
    return pts


def _has_interval(ax) -> bool:
    """A filled band (fill_between) or error bars on the axes."""
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.container import ErrorbarContainer

    return any(isinstance(c, PolyCollection | LineCollection) for c in ax.collections) or \
        any(isinstance(c, ErrorbarContainer) for c in ax.containers)


# --------------------------------------------------------------------------------------------------- the compiled PDF
def text_block(page) -> tuple[float, float, float, float]:
    left, top, right, bottom = TEXT_BLOCK
    r = page.rect
    return r.x0 + left, r.y0 + top, r.x1 - right, r.y1 - bottom


def page_fill(pdf: Path) -> list[float]:
    """Per page, the fraction of the text block's height covered by paragraphs, images or drawings (1 pt rows).

    Rows, not area: a full text page covers nearly all rows whatever its line ends and paragraph gaps, so blank
    rows measure the empty space a reader sees (under a float, after a page broken early)."""
    import pymupdf

    fills = []
    with pymupdf.open(pdf) as doc:
        for page in doc:
            x0, y0, x1, y1 = text_block(page)
            grid = np.zeros((int(y1 - y0), int(x1 - x0)), dtype=bool)

            def cover(r, grid=grid, x0=x0, y0=y0):
                a, b = max(int(r[0] - x0), 0), min(int(np.ceil(r[2] - x0)), grid.shape[1])
                c, d = max(int(r[1] - y0), 0), min(int(np.ceil(r[3] - y0)), grid.shape[0])
                if a < b and c < d:
                    grid[c:d, a:b] = True

            for block in page.get_text("blocks"):  # paragraphs, as a reader sees them
                cover(block[:4])
            for img in page.get_images(full=True):
                for r in page.get_image_rects(img[0]):
                    cover(r)
            for d in page.get_drawings():
                cover(d["rect"])
            fills.append(float(grid.any(axis=1).mean()))
    return fills


def text_sizes(pdf: Path) -> list[tuple[int, float, str]]:
    """(page, size in pt, text) of every text span of the PDF (the paper's own text, tables and formulas)."""
    import pymupdf

    out = []
    with pymupdf.open(pdf) as doc:
        for number, page in enumerate(doc, start=1):
            for block in page.get_text("dict")["blocks"]:
                for line in block.get("lines", []):
                    for span in line["spans"]:
                        if span["text"].strip():
                            out.append((number, round(span["size"], 2), span["text"]))
    return out


def placed_figures(pdf: Path, figure_dir: Path) -> list[dict]:
    """Every PNG of ``figure_dir`` embedded in the paper: its page, placement width and drawn width (pt), and the
    smallest text of its vector PDF twin as printed (size x placement / drawn width). Matched by pixel size; the
    twin is read next to the PNG, else from the idea's ``figures`` folder (a paper written before the loop)."""
    import pymupdf

    pngs = {}
    for png in sorted(Path(figure_dir).glob("*.png")):
        pix = pymupdf.Pixmap(str(png))
        pngs[(pix.width, pix.height)] = png
    out = []
    with pymupdf.open(pdf) as doc:
        for number, page in enumerate(doc, start=1):
            for img in page.get_images(full=True):
                png = pngs.get((img[2], img[3]))
                if png is None:
                    continue
                for r in page.get_image_rects(img[0]):
                    entry = {"name": png.stem, "page": number, "placed_pt": round(r.width, 1), "drawn_pt": None,
                             "min_font_pt": None, "printed_pt": None}
                    vector = next((p for p in (png.with_suffix(".pdf"), png.parents[2] / "figures" /
                                               f"{png.stem}.pdf") if p.exists()), png.with_suffix(".pdf"))
                    if vector.exists():
                        with pymupdf.open(vector) as v:
                            entry["drawn_pt"] = round(v[0].rect.width, 1)
                        sizes = [s for _, s, _ in text_sizes(vector)]
                        if sizes:
                            entry["min_font_pt"] = min(sizes)
                            entry["printed_pt"] = round(min(sizes) * r.width / entry["drawn_pt"], 2)
                    out.append(entry)
    return out


def check_pages(paper_dir: Path, tex: str, pdf: Path, context: dict) -> list[Finding]:
    """No page but the last with more than ``MAX_BLANK`` of its text block blank."""
    fills = page_fill(pdf)
    return [finding("page_fill", "error", f"page {i}", f"{1 - f:.0%} of the text block is blank (at most "
                    f"{MAX_BLANK:.0%} on a page that is not the last)")
            for i, f in enumerate(fills[:-1], start=1) if 1 - f > MAX_BLANK]


def check_printed_text(paper_dir: Path, tex: str, pdf: Path, context: dict) -> list[Finding]:
    """Every text span of the paper and every figure's text prints at ``MIN_PT`` or more."""
    out = []
    small = [(p, s, t) for p, s, t in text_sizes(pdf) if s < MIN_PT - 0.05]
    if small:
        p, s, t = min(small, key=lambda x: x[1])
        out.append(finding("text_size", "error", f"page {p}",
                           f"{len(small)} text spans print below {MIN_PT:g} pt, the smallest {s} pt: {t[:40]!r}"))
    for f in placed_figures(pdf, Path(paper_dir) / "figures"):
        if f["printed_pt"] is not None and f["printed_pt"] < MIN_PT - 0.05:
            out.append(finding("text_size", "error", f"figure {f['name']}",
                               f"its text prints at {f['printed_pt']} pt: drawn {f['drawn_pt']} pt wide, placed "
                               f"{f['placed_pt']} pt wide, smallest font {f['min_font_pt']} pt"))
    return out


def check_citations(paper_dir: Path, tex: str, pdf: Path, context: dict) -> list[Finding]:
    """Every figure label is cited with \\ref somewhere in the text; no figure is included twice."""
    out = []
    labels = re.findall(r"\\label\{(fig:[^}]+)\}", tex)
    cited = set(re.findall(r"\\(?:c|auto|eq)?ref\{(fig:[^}]+)\}", tex))
    out += [finding("uncited_figure", "warning", label, "the figure is never cited in the text")
            for label in labels if label not in cited]
    seen: dict[str, str] = {}
    for path in re.findall(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]+)\}", tex):
        file = Path(paper_dir) / path
        if not file.is_file():
            continue
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest in seen:
            out.append(finding("duplicate_figure", "error", path, f"the same image as {seen[digest]}"))
        seen.setdefault(digest, path)
    return out


def check_drawn(paper_dir: Path, tex: str, pdf: Path, context: dict) -> list[Finding]:
    """The findings :func:`check_figure` recorded when each figure of ``context["figures"]`` was drawn."""
    return [f for fig in context.get("figures") or [] for f in fig.get("findings") or []]


PAPER_CHECKS: list[Check] = [check_drawn, check_printed_text, check_pages, check_citations]
# the figure findings a redraw can fix (a larger font, the layout found again)
REDRAWN = ("text_size", "overlapping_text", "clipped_text", "legend_over_data")


def run_checks(paper_dir: Path, tex: str, pdf: Path, context: dict, checks: list[Check] | None = None
               ) -> list[Finding]:
    """Every check's findings; a check that raises is itself a finding (warning), never an abort."""
    out: list[Finding] = []
    for check in checks if checks is not None else PAPER_CHECKS:
        try:
            out += check(Path(paper_dir), tex, Path(pdf), context)
        except Exception as exc:  # noqa: BLE001 - one broken check must not stop the others
            out.append(finding("check_failed", "warning", getattr(check, "__name__", str(check)), repr(exc)[:300]))
    return out


def summary(pdf: Path, paper_dir: Path) -> dict[str, Any]:
    """Measured numbers of a paper: smallest text span, figures as printed, blank fraction per page."""
    sizes = text_sizes(pdf)
    return {"min_text_pt": min((s for _, s, _ in sizes), default=None),
            "figures": placed_figures(pdf, Path(paper_dir) / "figures"),
            "blank": [round(1 - f, 3) for f in page_fill(pdf)]}
