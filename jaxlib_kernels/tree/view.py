"""The tree as people look at it: ``tree.png`` (AIDE-like: a column per stage, a marker per node coloured by its
score, edges parent -> child, buggy nodes crossed, the final node ringed) and ``tree.html`` (a table per stage)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from jaxlib_kernels import figures
from jaxlib_kernels.tree import STAGES

BUGGY_COLOR = "#000000"
FINAL_COLOR = figures.CANDIDATE_COLOR


def _columns(data: dict) -> list[str]:
    present = {n["stage"] for n in data["nodes"]}
    return [s for s in STAGES if s in present]


def positions(data: dict) -> dict[str, tuple[float, float]]:
    """(column, row) of every node: its stage's column, rows in the order the nodes were made."""
    cols = _columns(data)
    out, rows = {}, dict.fromkeys(cols, 0)
    for n in data["nodes"]:
        c = n["stage"]
        out[n["id"]] = (float(cols.index(c)), float(rows[c]))
        rows[c] += 1
    return out


def draw(data: dict, out_dir: Path, name: str = "tree") -> str:
    """Draw the record's tree to ``out_dir/<name>.png`` (and .pdf); returns the PNG's path."""
    cols = _columns(data)
    pos = positions(data)
    tallest = max([sum(n["stage"] == c for n in data["nodes"]) for c in cols] or [1])
    maximize = bool((data.get("metric") or {}).get("maximize", True))
    final = (data.get("final") or {}).get("node")
    best = set((data.get("best") or {}).values())
    with figures.style():
        fig, axes = figures.subplots(1, 1, min(6.0, 1.2 + 0.12 * tallest))
        ax = axes[0, 0]
        for n in data["nodes"]:
            if n.get("parent") in pos:
                (x0, y0), (x1, y1) = pos[n["parent"]], pos[n["id"]]
                ax.plot([x0, x1], [y0, y1], color="#999999", lw=0.5, zorder=1)
        scored = [n for n in data["nodes"] if not n.get("buggy") and n.get("score") is not None]
        if scored:
            xs, ys = zip(*(pos[n["id"]] for n in scored), strict=True)
            scores = np.array([n["score"] for n in scored])
            cmap = "viridis" if maximize else "viridis_r"
            points = ax.scatter(xs, ys, c=scores, cmap=cmap, s=22, zorder=2, edgecolors="white", linewidths=0.3)
            fig.colorbar(points, ax=ax, label=f"{(data.get('metric') or {}).get('name', 'score')} "
                                              f"({'higher' if maximize else 'lower'} is better)")
        bugs = [pos[n["id"]] for n in data["nodes"] if n.get("buggy")]
        if bugs:
            bx, by = zip(*bugs, strict=True)
            ax.scatter(bx, by, marker="x", color=BUGGY_COLOR, s=22, zorder=2, label="buggy")
        marked = [pos[i] for i in best if i in pos and i != final]
        if marked:
            mx, my = zip(*marked, strict=True)
            ax.scatter(mx, my, facecolors="none", edgecolors="#0072B2", s=70, linewidths=0.9, zorder=3,
                       label="best of its stage")
        if final in pos:
            ax.scatter(*pos[final], facecolors="none", edgecolors=FINAL_COLOR, s=110, linewidths=1.4, zorder=3,
                       label="final")
        ax.set_xticks(range(len(cols)), cols)
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(tallest - 0.5 if tallest > 1 else 0.5, -0.5)
        ax.set_ylabel("node (in the order made)")
        ax.set_title(f"research tree of {data.get('idea', '')}")
        if bugs or marked or final in pos:
            figures.legend(fig, axes, 3)
        png, _ = figures.save(fig, Path(out_dir), name)
    return png


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def to_html(data: dict, png_name: str = "tree.png") -> str:
    """A self-contained page: the figure (by its relative path) and a table of nodes per stage."""
    final = (data.get("final") or {}).get("node")
    best = data.get("best") or {}
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>Research tree of "
             f"{html.escape(str(data.get('idea', '')))}</title><style>body{{font-family:sans-serif;margin:1em}}"
             f"table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:2px 6px;"
             f"font-size:90%}}tr.best{{background:#e8f1fa}}tr.final{{background:#fbe3d6}}tr.buggy{{color:#999}}"
             f"code{{white-space:pre-wrap}}</style></head><body>"),
             f"<h1>Research tree of {html.escape(str(data.get('idea', '')))}</h1>",
             (f"<p>{html.escape(str((data.get('metric') or {}).get('name', '')))}, "
             f"{'maximised' if (data.get('metric') or {}).get('maximize', True) else 'minimised'}; search seeds "
             f"{html.escape(str((data.get('search') or {}).get('seeds')))}. Final node: {html.escape(str(final))}."
             f"</p><img src='{html.escape(png_name)}' style='max-width:100%'>")]
    for stage in _columns(data):
        parts.append(f"<h2>{stage}</h2><table><tr><th>id</th><th>parent</th><th>kind</th><th>label</th>"
                     "<th>score</th><th>hyperparameters</th><th>cost</th><th>source</th><th>why</th></tr>")
        for n in (n for n in data["nodes"] if n["stage"] == stage):
            cls = "final" if n["id"] == final else "best" if n["id"] == best.get(stage) else \
                "buggy" if n.get("buggy") else ""
            parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{_cell(v)}</td>" for v in (
                n["id"], n.get("parent"), n["kind"], n.get("label"), n.get("score"), n.get("hparams") or "",
                n.get("cost"), n.get("source"), n.get("why"))) + "</tr>")
        parts.append("</table>")
    if data.get("ablation"):
        parts.append("<h2>ablations</h2><table><tr><th>ablation</th><th>score</th><th>change</th></tr>")
        parts += [f"<tr><td>{_cell(r['label'])}</td><td>{_cell(r['score'])}</td><td>{_cell(r['delta'])}</td></tr>"
                  for r in data["ablation"]]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(data: dict, out_dir: Path) -> dict:
    """``tree.png`` and ``tree.html`` under ``out_dir``; their names relative to ``out_dir``'s parent."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw(data, out_dir)
    (out_dir / "tree.html").write_text(to_html(data))
    return {"png": f"{out_dir.name}/tree.png", "html": f"{out_dir.name}/tree.html"}
