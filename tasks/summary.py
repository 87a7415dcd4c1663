"""Summary of a run: the leaderboard (``summary.md``), the archive update, and the Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from jaxlib_kernels.templates.base import Metric
from tasks import archive


def leaderboard_rows(ideas: list[dict], metric: Metric | None = None) -> list[dict]:
    """One row per idea, best first by ``metric`` (default: the direction its results recorded)."""
    rows = []
    for idea in ideas:
        r = idea.get("result") or {}
        rows.append({
            "idea": idea["Name"],
            "novelty": (idea.get("novelty") or {}).get("decision", ""),
            "status": idea.get("status", ""),
            "train_mean": r.get("train_mean"),
            "best_baseline_mean": r.get("best_baseline_mean"),
            "held_out_mean": r.get("held_out_mean"),
            "significant_wins": r.get("significant_wins"),
            "significant_losses": r.get("significant_losses"),
            "maximize": r.get("maximize", True),
            "overall": (idea.get("review") or {}).get("Overall"),
            "decision": (idea.get("review") or {}).get("Decision", ""),
            "pdf": (idea.get("paper") or {}).get("pdf") or "",
        })
    # best first in the metric's direction (ideas without results last)
    metric = metric or Metric.recorded(next((r["maximize"] for r in rows if r["train_mean"] is not None), None))
    measured = metric.rank({i: r["train_mean"] for i, r in enumerate(rows) if r["train_mean"] is not None})
    rows = [rows[i] for i in measured] + [r for r in rows if r["train_mean"] is None]
    for r in rows:
        r.pop("maximize")
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def write_summary(run_dir: Path, run_id: str, ideas: list[dict], timings: dict, lineage: dict | None = None) -> str:
    rows = leaderboard_rows(ideas)
    cols = list(rows[0]) if rows else ["idea"]
    lines = [f"# Run {run_id}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    if lineage:
        link = f"[lineage.png]({Path(lineage['png']).name})"
        lines += ["", f"Lineage of the archive ({lineage['nodes']} nodes, {lineage['edges']} from a parent): {link}"]
    lines += tree_links(run_dir, ideas)
    lines += ["", "## Stage timings (s)", ""] + [f"- {k}: {v:.1f}" for k, v in timings.items()]
    text = "\n".join(lines) + "\n"
    Path(run_dir, "summary.md").write_text(text)
    return text


def tree_links(run_dir: Path, ideas: list[dict]) -> list[str]:
    """Lines of ``summary.md`` linking each idea's research tree view (``ideas/<idea>/tree/tree.png`` and
    ``tree.html``), or saying why it has none."""
    lines = []
    for idea in ideas:
        tree = idea.get("tree")
        if not tree:
            continue
        if tree.get("error"):
            lines.append(f"- {idea['Name']}: no tree ({tree['error']})")
            continue
        links = []
        for path in (tree.get("view") or {}).values():
            path = Path(path) if Path(path).is_absolute() else Path(run_dir, "ideas", idea["Name"], path)
            try:
                links.append(f"[{path.name}]({path.resolve().relative_to(Path(run_dir).resolve())})")
            except ValueError:
                links.append(f"[{path.name}]({path.as_uri()})")
        nodes = tree.get("nodes") or {}
        counts = ", ".join(f"{n} {stage}" for stage, n in nodes.items()) if isinstance(nodes, dict) else ""
        lines.append(f"- {idea['Name']}: {', '.join(links) or 'no view'}" + (f" (nodes: {counts})" if counts else ""))
    return ["", "## Research trees", "", *lines] if lines else []


def draw_lineage(run_dir: Path, run_id: str, template: str, archived: list[dict]) -> dict | None:
    """``lineage.png`` of the run folder: the template's archive as a tree (``tasks.plotting.plot_lineage``)."""
    from jaxlib_kernels.templates import make
    from tasks import plotting

    tpl = make(template)
    return plotting.plot_lineage(archived, list(tpl.baselines), tpl.baseline_labels, run_id, Path(run_dir), tpl.metric)


def update_archive(archive_path: Path, run_id: str, template: str, ideas: list[dict]) -> int:
    n = 0
    for idea in ideas:
        if idea.get("final_info"):
            n += archive.record(archive_path, run_id, template, idea, idea["final_info"], idea.get("review"))
    return n
