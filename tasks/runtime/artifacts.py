"""What a researcher sees of a run in the Prefect UI: its results, figures, papers, archive and progress.

Every function here publishes Prefect artifacts and must be called inside a flow or task run (the artifacts
belong to that run); outside one it does nothing. The keys (lower case, dashes) are stable, so the UI's
Artifacts page shows the latest version of each:

* ``results``: a table, one row per idea and setting: the candidate's mean, the best baseline's, the difference
  in the metric's direction and whether it is significant;
* ``figures``: a markdown artifact with each idea's learning curves embedded (a PNG as a data URI, so the
  browser needs no access to the run folder);
* ``paper-<idea>``: a link artifact to the idea's PDF (``file://``) with its path as the text;
* ``archive``: the open-ended archive's rows of this template, as a table, and ``lineage``: its tree as a figure;
* ``experiment-progress``: a progress artifact, units done of the total (:class:`Progress`).
"""

from __future__ import annotations

import base64
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _num(value) -> float | None:
    try:
        return None if value is None else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def results_rows(ideas: list[dict]) -> list[dict]:
    """One row per (idea, setting) of the ideas that have results."""
    rows = []
    for idea in ideas:
        for setting, info in (idea.get("final_info") or {}).items():
            cmp = info.get("comparison") or {}
            best = cmp.get("best_baseline")
            rows.append({
                "idea": idea["Name"], "setting": setting, "held_out": bool(info.get("held_out")),
                "candidate_mean": _num((info.get("means") or {}).get(idea["Name"])),
                "best_baseline": best, "baseline_mean": _num((info.get("means") or {}).get(best)),
                "improvement": _num(cmp.get("improvement")), "p_value": _num(cmp.get("p_value")),
                "significant": bool(cmp.get("significant")),
                "verdict": "better" if cmp.get("better") else "worse" if cmp.get("worse") else "no significant difference",
            })
    return rows


def _figure_markdown(idea: dict, run_path: Path) -> str:
    figures = run_path / "ideas" / idea["Name"] / "figures"
    parts = []
    for png in sorted(figures.glob("*.png"))[:3]:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"**{png.stem.replace('_', ' ')}** (`{png}`)\n\n![{png.stem}](data:image/png;base64,{data})\n")
    return f"## {idea['Name']}\n\n" + "\n".join(parts) if parts else ""


def publish_results(run_id: str, run_path: Path, ideas: list[dict]) -> None:
    """The ``results`` table, the ``figures`` markdown and one ``paper-<idea>`` link per PDF."""
    if not _in_run():
        return
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    rows = results_rows(ideas)
    if rows:
        create_table_artifact(key="results", table=rows, description=f"Results of {run_id}: candidate vs best "
                              "baseline per setting (improvement in the metric's direction)")
    figures = [m for m in (_figure_markdown(i, run_path) for i in ideas if i.get("final_info")) if m]
    if figures:
        create_markdown_artifact(key="figures", markdown=f"# Figures of {run_id}\n\n" + "\n".join(figures),
                                 description=f"Figures of {run_id}")
    for idea in ideas:
        pdf = (idea.get("paper") or {}).get("pdf")
        if pdf:
            create_link_artifact(key=_key(f"paper-{idea['Name']}"), link=Path(pdf).resolve().as_uri(),
                                 link_text=str(pdf), description=f"PDF of {idea['Name']} ({run_id})")


def publish_archive(run_id: str, rows: list[dict], lineage: dict | None = None) -> None:
    """The archive (every candidate of earlier runs and this one) as the ``archive`` table, and its lineage figure
    (``lineage``: which candidate came from which, with its advantage) embedded as a PNG."""
    if not _in_run() or not rows:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    keep = ("run_id", "idea", "parent", "title", "train_mean", "advantage", "overall")
    table = [{k: (_num(r.get(k)) if isinstance(r.get(k), float) else r.get(k)) for k in keep} for r in rows]
    create_table_artifact(key="archive", table=table, description=f"The open-ended archive after {run_id}")
    if lineage and Path(lineage["png"]).exists():
        data = base64.b64encode(Path(lineage["png"]).read_bytes()).decode()
        create_markdown_artifact(
            key="lineage", description=f"Lineage of the archive after {run_id}",
            markdown=f"# Lineage of the archive after {run_id}\n\n{lineage['nodes']} nodes, {lineage['edges']} "
                     f"derived from a parent (`{lineage['png']}`)\n\n![lineage](data:image/png;base64,{data})\n")


class Progress:
    """A Prefect progress artifact (0-100 %) plus, on a terminal, one self-overwriting line on stderr.

    ``update(done)`` is cheap to call often: the artifact is updated at most once a second and on the last unit.
    Outside a flow or task run only the terminal line is shown; when stderr is not a terminal, only the artifact.
    """

    def __init__(self, total: int, label: str, key: str = "progress"):
        self.total, self.label, self.done = max(int(total), 1), label, 0
        self.tty = sys.stderr.isatty()
        self.artifact_id = None
        self._last = 0.0
        if _in_run():
            try:
                from prefect.artifacts import create_progress_artifact

                self.artifact_id = create_progress_artifact(progress=0.0, key=_key(key),
                                                            description=f"{label}: 0 of {self.total}")
            except Exception as exc:  # noqa: BLE001 - progress must never stop a run
                log.debug("no progress artifact: %s", exc)

    def update(self, done: int) -> None:
        self.done = min(int(done), self.total)
        if self.tty:
            end = "\n" if self.done >= self.total else ""
            print(f"\r\x1b[K{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%)", end=end,
                  file=sys.stderr, flush=True)
        now = time.time()
        if self.artifact_id is not None and (now - self._last >= 1.0 or self.done >= self.total):
            self._last = now
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact_id, progress=100.0 * self.done / self.total,
                                         description=f"{self.label}: {self.done} of {self.total}")
            except Exception as exc:  # noqa: BLE001
                log.debug("progress artifact not updated: %s", exc)
