"""Figures of one idea (ARCHITECTURE.md, ``make_plots``): curves and final values, plus the template's own figures.

Reads the tidy ``results.parquet`` frame and ``final_info.json`` of ``aggregate_results``; axis names come from the
template's ``ResultSchema``; the template's ``figures`` hook adds what is about its problem (the lpo drift's shape).
Every figure is written as PNG (for the paper and pymupdf's image count) and PDF (vector, for people).
Confidence intervals are t-intervals over seeds, as in the aggregate statistics (Agarwal et al., 2021, argue for
interval estimates over point estimates when seeds are few).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter
from PIL import Image
from scipy import stats

from jaxlib_kernels.figures import (
    CANDIDATE_COLOR,
    DPI,
    FONT_PT,
    PALETTE,
    SAVE_HOOKS,
    legend,
    plt,
    save,
    style,
    subplots,
)
from jaxlib_kernels.templates import make
from jaxlib_kernels.templates.base import Metric, ResultSchema
from tasks import treefacts
from tasks.figcheck import check_figure
from tasks.review import _finite
from tasks.runtime.caching import stage
from tasks.runtime.runfolder import read_json

DEFAULT_SCHEMA = ResultSchema()
BASELINE_COLORS = PALETTE
SEEDED = ("learning_curves", "final_returns")  # the figures drawn from every seed (an interval is expected)
SMOOTH_FRACTION = 0.05  # rolling window: this fraction of the updates, at least 1, at most 10


def _candidate_name(idea: dict, results: pd.DataFrame) -> str:
    if "role" in results and (results["role"] == "candidate").any():
        return str(results.loc[results["role"] == "candidate", "method"].iloc[0])
    return str(idea["Name"])


def _methods(results: pd.DataFrame, final_info: dict, candidate: str) -> list[str]:
    """Baselines in a stable order (as first seen), the candidate last."""
    seen: list[str] = []
    for m in list(results["method"].drop_duplicates()) + [m for s in final_info.values() for m in s.get("means", {})]:
        if m not in seen and m != candidate:
            seen.append(str(m))
    return [*seen, candidate]


def _colors(methods: list[str], candidate: str) -> dict[str, str]:
    colors, i = {}, 0
    for m in methods:
        if m == candidate:
            colors[m] = CANDIDATE_COLOR
        else:
            colors[m] = BASELINE_COLORS[i % len(BASELINE_COLORS)]
            i += 1
    return colors


def _settings(results: pd.DataFrame, final_info: dict) -> list[str]:
    order = list(final_info) or []
    for s in results["setting"].drop_duplicates():
        if s not in order:
            order.append(str(s))
    return order


def _held_out(setting: str, results: pd.DataFrame, final_info: dict) -> bool:
    if setting in final_info and "held_out" in final_info[setting]:
        return bool(final_info[setting]["held_out"])
    rows = results[results["setting"] == setting]
    return bool(rows["held_out"].any()) if "held_out" in rows else False


def _title(setting: str, results: pd.DataFrame, final_info: dict) -> str:
    return f"{setting} (held out)" if _held_out(setting, results, final_info) else f"{setting} (training)"


def _grid(n: int, most: int = 3) -> tuple[int, int]:
    cols = min(most, n)
    return math.ceil(n / cols), cols


def _t_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row means of a (points x seeds) table and 95% t-interval half-widths, ignoring NaN (NaN where n < 2)."""
    n = np.sum(~np.isnan(values), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no episode finished yet on any seed
        mean = np.nanmean(values, axis=1)
        sd = np.nanstd(values, axis=1, ddof=1)
    half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    return mean, np.where(n >= 2, half, np.nan)


def smooth_curve(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per-seed rolling mean of ``value`` over updates (NaN updates are skipped, not counted as zero).

    ``frame`` has columns seed, step, value; returns a (step x seed) table.
    """
    table = frame.pivot_table(index="step", columns="seed", values="value", aggfunc="mean", dropna=False)
    table = table.sort_index()
    return table.rolling(window, min_periods=1).mean()


def plot_learning_curves(results, final_info, settings, methods, colors, labels, out_dir,
                         schema: ResultSchema = DEFAULT_SCHEMA) -> dict:
    curves = results[results["metric"] == "curve"]
    rows, cols = _grid(len(settings))
    fig, axes = subplots(rows, cols, 2.0)
    windows, seeds_seen = set(), set()
    for ax, setting in zip(axes.flat, settings, strict=False):
        part = curves[curves["setting"] == setting]
        n_updates = part["step"].nunique()
        window = int(min(10, max(1, round(SMOOTH_FRACTION * n_updates))))
        windows.add(window)
        for method in methods:
            rows_m = part[part["method"] == method]
            if rows_m.empty:
                continue
            table = smooth_curve(rows_m, window)
            mean, half = _t_interval(table.to_numpy(dtype=float))
            seeds_seen.add(int(table.shape[1]))
            x = table.index.to_numpy()
            lw = 1.8 if method == methods[-1] else 1.1
            ax.plot(x, mean, color=colors[method], lw=lw, label=labels.get(method, method))
            ok = ~np.isnan(half)
            ax.fill_between(x[ok], (mean - half)[ok], (mean + half)[ok], color=colors[method], alpha=0.18, lw=0)
        ax.set_title(_title(setting, results, final_info))
        ax.set_xlabel(schema.x_label)
        ax.set_ylabel(schema.curve_label)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1M: no offset text to collide with the label
        ax.locator_params(nbins=4)
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    legend(fig, axes, len(methods))
    png, pdf = save(fig, out_dir, "learning_curves")
    held = [s for s in settings if _held_out(s, results, final_info)]
    caption = (
        f"Learning curves on {len(settings)} setting{'s' if len(settings) != 1 else ''}: {schema.curve_label} "
        f"against {schema.x_label}, mean over {_count_text(seeds_seen)} seeds per method with a shaded 95\u00a0% "
        f"t-interval. "
        + (f"Curves are smoothed by a rolling mean over {_count_text(windows)} updates, skipping points with no "
           "measurement. " if max(windows, default=1) > 1 else "")
        + (f"Held-out settings ({', '.join(held)}) are marked in the panel titles." if held else
           "All settings are training settings.")
    )
    return {"name": "learning_curves", "png": png, "pdf": pdf, "caption": caption, "width_in": fig.get_figwidth()}


def _count_text(values: set[int]) -> str:
    values = sorted(values)
    if not values:
        return "0"
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}\u2013{values[-1]}"


def plot_final_returns(results, final_info, settings, methods, colors, labels, out_dir,
                       schema: ResultSchema = DEFAULT_SCHEMA, metric: Metric | None = None) -> dict:
    finals = results[results["metric"] == "final"]
    longest = max((len(labels.get(m, m)) for m in methods), default=0)
    rows, cols = _grid(len(settings), 2 if longest > 24 else 3)  # long method names take the first panel's width
    fig, axes = subplots(rows, cols, 0.35 + 0.22 * len(methods), sharey=True)
    rng = np.random.default_rng(0)  # jitter of the seed points only
    seeds, significant = set(), []
    order = {m: len(methods) - 1 - i for i, m in enumerate(methods)}  # top to bottom as listed: the candidate last
    for ax, setting in zip(axes.flat, settings, strict=False):
        info = final_info.get(setting, {})
        part = finals[finals["setting"] == setting]
        present = [m for m in methods if m in info.get("means", {}) or (part["method"] == m).any()]
        for method in present:
            y = order[method]
            values = part.loc[part["method"] == method, "value"].to_numpy(dtype=float)
            mean = info.get("means", {}).get(method, float(np.mean(values)) if values.size else np.nan)
            lo, hi = info.get("ci95", {}).get(method, [np.nan, np.nan])
            seeds.add(int(info.get("n", {}).get(method, values.size)))
            # points with intervals, not bars: a bar of a negative return would hang from 0
            ax.scatter(values, y + rng.uniform(-0.15, 0.15, values.size), s=8, color=colors[method], alpha=0.6,
                       zorder=2, linewidth=0)
            if np.isfinite(lo) and np.isfinite(hi):
                ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], color="black", capsize=2.5, lw=0.9, zorder=3)
            ax.scatter([mean], [y], s=22, marker="D", color=colors[method], edgecolor="black", linewidth=0.5,
                       zorder=4)
        ax.set_yticks([order[m] for m in methods], [labels.get(m, m) for m in methods])
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.set_xlabel(schema.final_label)
        ax.locator_params(axis="x", nbins=4)
        comp = info.get("comparison")
        title = _title(setting, results, final_info)
        if comp:
            title += f"\np = {comp['p_value']:.3g}"
            if comp.get("significant"):
                significant.append(setting)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    png, pdf = save(fig, out_dir, "final_returns")
    caption = (
        f"{schema.final_label[:1].upper() + schema.final_label[1:]} ({metric.description}, {metric.direction}) per "
        "setting and method: diamonds show "
        f"the mean over {_count_text(seeds)} seeds, error bars the 95\u00a0% t-interval, dots the individual "
        f"seeds. Panel titles give the Welch t-test p-value of the candidate against the best baseline; "
        + (f"the difference is significant at the 5\u00a0% level on {', '.join(significant)}." if significant
           else "no difference is significant at the 5\u00a0% level.")
    )
    return {"name": "final_returns", "png": png, "pdf": pdf, "caption": caption, "width_in": fig.get_figwidth()}


TREE_FIGURE = "research_tree"  # the paper's figure of the idea's research tree (tree.json), when there is one
TREE_STAGES = ("implement", "tune", "improve", "ablate")  # the stages whose nodes the figure shows


def plot_tree(record: dict, metric: Metric, out_dir: Path, schema: ResultSchema = DEFAULT_SCHEMA) -> dict | None:
    """``research_tree.png`` (and PDF): the candidate's nodes of ``tree.json`` by stage (x, spread within a stage in
    the order they were made) and by their score on the search seeds (y, in the metric's units), a line from each
    node to its parent, the best node of each stage ringed (not of the ablations: no ablation is a candidate), failed
    nodes as crosses under the others. None when
    the tree has no candidate node. The paper prints its own caption (``caption_tree.tex.j2``)."""
    nodes = [n for n in record.get("nodes") or [] if n.get("role", "candidate") == "candidate"
             and n.get("stage") in TREE_STAGES]
    if not nodes:
        return None
    stages = [s for s in TREE_STAGES if any(n["stage"] == s for n in nodes)]
    scored = {n["id"]: float(n["score"]) for n in nodes if not n.get("buggy") and _finite(n.get("score"))}
    low, high = (min(scored.values()), max(scored.values())) if scored else (0.0, 1.0)
    floor = low - 0.12 * ((high - low) or 1.0)  # where failed nodes sit
    pos: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(stages):
        mine = [n for n in nodes if n["stage"] == name]
        for k, n in enumerate(mine):
            x = i + (0.0 if len(mine) == 1 else -0.32 + 0.64 * k / (len(mine) - 1))
            pos[n["id"]] = (x, scored.get(n["id"], floor))
    fig, axes = subplots(1, 1, 2.4)
    ax = axes[0, 0]
    for n in nodes:
        parent = pos.get(n.get("parent"))
        if parent is not None:
            (x0, y0), (x1, y1) = parent, pos[n["id"]]
            ax.plot([x0, x1], [y0, y1], color="0.65", lw=0.6, zorder=1, label="_edge")
    good = [pos[n["id"]] for n in nodes if n["id"] in scored]
    bad = [pos[n["id"]] for n in nodes if n["id"] not in scored]
    if good:
        ax.scatter(*zip(*good, strict=True), s=16, color=CANDIDATE_COLOR, zorder=3, linewidth=0, label="node")
    if bad:
        ax.scatter(*zip(*bad, strict=True), s=18, marker="x", color="0.25", zorder=3, linewidth=0.9,
                   label="failed node (no score)")
    best = [pos[b] for s, b in (record.get("best") or {}).items() if s in stages and s != "ablate" and b in pos]
    if best:
        ax.scatter(*zip(*best, strict=True), s=70, facecolors="none", edgecolors="black", linewidth=0.9, zorder=4,
                   label="best node of its stage")
    for i in range(1, len(stages)):
        ax.axvline(i - 0.5, color="0.85", lw=0.6, zorder=0)
    ax.set_xticks(range(len(stages)), stages)
    ax.set_xlim(-0.55, len(stages) - 0.45)
    ax.set_ylabel(f"{schema.final_label}, search seeds\n({metric.direction})")
    ax.grid(axis="y", alpha=0.3)
    ax.locator_params(axis="y", nbins=4)
    legend(fig, axes, 3)
    png, pdf = save(fig, out_dir, TREE_FIGURE)
    caption = (f"The search tree of the candidate: {len(nodes)} nodes by stage and by their {schema.final_label} on "
               "the search seeds, each joined to its parent; rings mark the best node of each stage.")
    return {"name": TREE_FIGURE, "png": png, "pdf": pdf, "caption": caption, "width_in": fig.get_figwidth()}


def make_plots(
    idea: dict,
    results: pd.DataFrame,
    final_info: dict,
    sources: dict[str, str],
    out_dir: Path,
    labels: dict[str, str],
    template=None,
    font_pt: float = FONT_PT,
) -> list[dict]:
    """Write learning_curves and final_returns (PNG + PDF) to ``out_dir``, then the template's own figures, each
    drawn at the width it prints (``width_in`` of its record) with base font ``font_pt``.

    A redraw (the writeup loop) passes a larger ``font_pt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    candidate = _candidate_name(idea, results)
    methods = _methods(results, final_info, candidate)
    colors = _colors(methods, candidate)
    labels = {**{m: m for m in methods}, **dict(labels)}
    labels.setdefault(candidate, candidate)
    if labels[candidate] == candidate:
        labels[candidate] = f"{candidate} (ours)"
    settings = _settings(results, final_info)
    schema = template.schema if template is not None else DEFAULT_SCHEMA
    metric = template.metric if template is not None else Metric("final", "the final value")
    seeds = int(results["seed"].nunique()) if "seed" in results else None
    drawn: dict[str, list] = {}

    def check(fig, name):  # seeds are behind the curves and final values; a template's figures say nothing of them
        drawn[name] = check_figure(fig, name, n_seeds=seeds if name in SEEDED else None)

    SAVE_HOOKS.append(check)
    try:
        with style(font_pt):
            figures = [
                plot_learning_curves(results, final_info, settings, methods, colors, labels, out_dir, schema),
                plot_final_returns(results, final_info, settings, methods, colors, labels, out_dir, schema, metric),
            ]
            if template is not None:
                figures += template.figures(template=template, idea=idea, sources=sources, results=results,
                                            final_info=final_info, methods=methods, colors=colors, labels=labels,
                                            out_dir=out_dir)
            record = treefacts.load(idea)
            drawn_tree = plot_tree(record, treefacts.metric_of(record, template), out_dir, schema) if record else None
            figures += [drawn_tree] if drawn_tree else []
    finally:
        SAVE_HOOKS.remove(check)
    for fig in figures:  # a template's figure: its width as saved (figures are saved at their own size)
        if "width_in" not in fig:
            with Image.open(fig["png"]) as img:
                fig["width_in"] = round(img.width / DPI, 3)
        fig["findings"] = drawn.get(fig["name"], [])
    return figures


def lineage(rows: list[dict], baselines: list[str]) -> dict:
    """The archive as a tree: nodes (baselines, then every archived candidate in the order it was first archived)
    and edges (parent -> child). A candidate's parent is the latest earlier candidate of that name, else the
    baseline of that name; a parent the archive does not know (an LLM idea names none) gives no edge."""
    nodes = [{"id": f"baseline:{b}", "name": b, "baseline": True, "run": 0, "advantage": None} for b in baselines]
    order = sorted(rows, key=lambda r: (r.get("created") or "", r["run_id"], r["idea"]))
    runs = list(dict.fromkeys(r["run_id"] for r in order))
    latest: dict[str, str] = {}
    edges = []
    for r in order:
        node = {"id": f"{r['run_id']}:{r['idea']}", "name": r["idea"], "baseline": False,
                "run": runs.index(r["run_id"]) + 1, "run_id": r["run_id"], "advantage": r.get("advantage")}
        parent = r.get("parent")
        source = latest.get(parent) or (f"baseline:{parent}" if parent in baselines else None)
        if source is not None:
            edges.append((source, node["id"]))
        nodes.append(node)
        latest[r["idea"]] = node["id"]
    return {"nodes": nodes, "edges": edges, "runs": runs}


def plot_lineage(rows: list[dict], baselines: list[str], labels: dict[str, str], run_id: str, out_dir: Path,
                 metric: Metric) -> dict | None:
    """``lineage.png`` (and PDF) in ``out_dir``: every archived candidate of the template by the run that archived
    it (x) and its advantage over the best baseline in the metric's direction (y, positive = better), with an arrow
    from the idea it was derived from; the baselines are the roots at x = 0. The run ``run_id``'s candidates are
    drawn filled, earlier runs' hollow. None when the archive is empty."""
    tree = lineage(rows, baselines)
    candidates = [n for n in tree["nodes"] if not n["baseline"]]
    if not candidates:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pos: dict[str, tuple[float, float]] = {}
    for i, b in enumerate(n for n in tree["nodes"] if n["baseline"]):
        pos[b["id"]] = (0.0, 0.0)
        b["label_offset"] = i
    by_run: dict[int, int] = {}
    for n in candidates:
        k = by_run.get(n["run"], 0)
        by_run[n["run"]] = k + 1
        y = n["advantage"] if n["advantage"] is not None and np.isfinite(n["advantage"]) else 0.0
        pos[n["id"]] = (n["run"] + 0.12 * k, float(y))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(tree["runs"]) + 2.5), 3.8))
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    for a, b in tree["edges"]:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 0.9, "shrinkA": 4, "shrinkB": 4})
    ax.scatter([0.0], [0.0], marker="s", s=60, color="0.3", zorder=3)
    names = ", ".join(labels.get(b, b) for b in baselines)
    ax.annotate(f"baselines:\n{names}", (0.0, 0.0), textcoords="offset points", xytext=(6, -14), fontsize=7,
                va="top")
    for n in candidates:
        x, y = pos[n["id"]]
        ours = n["run_id"] == run_id
        better = y > 0
        color = "tab:green" if better else "tab:red"
        ax.scatter([x], [y], s=40, zorder=3, facecolors=color if ours else "white", edgecolors=color)
        ax.annotate(n["name"].replace("_", " "), (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xticks(range(len(tree["runs"]) + 1), ["baselines", *tree["runs"]], rotation=20, ha="right", fontsize=7)
    ax.set_xlim(-0.4, len(tree["runs"]) + 0.8)
    ax.set_ylabel(f"advantage over the best baseline\n({metric.name}, {metric.direction}; > 0 is better)", fontsize=8)
    ax.set_title(f"Lineage of the archive after {run_id} (filled: this run)", fontsize=9)
    png, pdf = save(fig, out_dir, "lineage")
    return {"png": png, "pdf": pdf, "nodes": len(tree["nodes"]), "edges": len(tree["edges"])}


LABEL_WORDS = 6  # a candidate's label: at most this many words of its title


def candidate_label(idea: dict) -> str:
    """A short human label of an idea: its title up to the first colon or "for/in/with/on/via" (at most
    ``LABEL_WORDS`` words), else its name with spaces."""
    head = re.split(r":| for | in | with | on | via ", str(idea.get("Title") or "").strip(), maxsplit=1)[0]
    return " ".join(head.split()[:LABEL_WORDS]) or str(idea["Name"]).replace("_", " ")


def labels_of(template_name: str, idea: dict) -> dict[str, str]:
    """Legend and table labels of a run's methods: the template's baselines and the idea, marked "(ours)"."""
    template = make(template_name)
    return {**template.baseline_labels, idea["Name"]: f"{candidate_label(idea)} (ours)"}


# ---- Prefect task -------------------------------------------------------------------------------------------

@stage(name="make_plots")
def make_plots_task(template_name: str, idea: dict, idea_dir: str) -> list[dict]:
    """Curves and final values from the idea's results.parquet, then the template's own figures."""
    template = make(template_name)
    results = pd.read_parquet(Path(idea_dir) / "results.parquet")
    final_info = read_json(Path(idea_dir) / "final_info.json")
    sources = {b: baseline.source for b, baseline in template.baselines.items()}
    sources[idea["Name"]] = idea["source"]
    return make_plots(idea, results, final_info, sources, Path(idea_dir) / "figures", labels_of(template_name, idea),
                      template)
