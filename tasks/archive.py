"""``runs/archive.sqlite``: every evaluated candidate of every run, read by ideation (open-ended research).

``parent`` is the idea a candidate was derived from (a baseline's name or an archived idea's), where the
proposer says so: the lineage figure of a run draws the archive as that tree (``tasks.plotting.plot_lineage``).
``advantage`` is the mean over training settings of the candidate's improvement over the best baseline in the
metric's direction (positive = better, for maximised and minimised metrics alike); ``train_mean`` is the raw mean.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

from jaxlib_kernels.templates.base import Metric

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    run_id TEXT NOT NULL,
    template TEXT NOT NULL,
    idea TEXT NOT NULL,
    title TEXT,
    expression TEXT,
    source TEXT,
    setting TEXT NOT NULL,
    held_out INTEGER NOT NULL,
    mean REAL,
    stderr REAL,
    n INTEGER,
    best_baseline TEXT,
    best_baseline_mean REAL,
    p_value REAL,
    overall INTEGER,
    decision TEXT,
    created TEXT NOT NULL,
    improvement REAL,
    parent TEXT,
    PRIMARY KEY (run_id, idea, setting)
)
"""


COLUMNS = ("run_id, template, idea, title, expression, source, setting, held_out, mean, stderr, n, best_baseline, "
           "best_baseline_mean, p_value, overall, decision, created, improvement, parent")


def connect(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute(SCHEMA)
    columns = {row[1] for row in con.execute("PRAGMA table_info(candidates)")}
    if "improvement" not in columns:  # an archive of an older version: the metric's signed gain was added later
        con.execute("ALTER TABLE candidates ADD COLUMN improvement REAL")
    if "parent" not in columns:  # the idea a candidate was derived from (a baseline or an archived idea), later too
        con.execute("ALTER TABLE candidates ADD COLUMN parent TEXT")
    return con


def record(path: Path, run_id: str, template: str, idea: dict, final_info: dict, review: dict | None) -> int:
    """Insert (or replace) one row per setting for an evaluated idea; returns the number of rows."""
    name = idea["Name"]
    rows = []
    now = dt.datetime.now(dt.UTC).isoformat()
    for setting, info in final_info.items():
        comp = info.get("comparison", {})
        rows.append((
            run_id, template, name, idea.get("Title"), json.dumps(idea.get("expression")), idea.get("source"),
            setting, int(bool(info.get("held_out"))), info["means"].get(name), info["stderrs"].get(name),
            info.get("n", {}).get(name), comp.get("best_baseline"),
            info["means"].get(comp.get("best_baseline")) if comp.get("best_baseline") else None,
            comp.get("p_value"), (review or {}).get("Overall"), (review or {}).get("Decision"), now,
            comp.get("improvement"), None if idea.get("parent") is None else str(idea["parent"]),
        ))
    with connect(path) as con:
        con.executemany(f"INSERT OR REPLACE INTO candidates ({COLUMNS}) VALUES ({','.join('?' * 19)})", rows)
    return len(rows)


def candidates(path: Path, template: str, metric: Metric | None = None) -> list[dict]:
    """Every archived candidate of a template, one dict per idea, with its mean over training settings and its
    advantage (best first). A row archived before the signed improvement was recorded is signed by ``metric``
    (default: the registered template's)."""
    if not Path(path).exists():
        return []
    if metric is None:
        from jaxlib_kernels.templates import TEMPLATES, make

        metric = make(template).metric if template in TEMPLATES else Metric.recorded()
    with connect(path) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            "SELECT run_id, idea, title, expression, source, AVG(CASE WHEN held_out = 0 THEN mean END) AS train_mean, "
            "AVG(CASE WHEN held_out = 0 THEN COALESCE(improvement, ? * (mean - best_baseline_mean)) END) AS advantage, "
            "MAX(overall) AS overall, MAX(parent) AS parent, MIN(created) AS created "
            "FROM candidates WHERE template = ? GROUP BY run_id, idea ORDER BY advantage DESC",
            (metric.sign, template),
        ).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["expression"] = json.loads(d["expression"]) if d["expression"] else None
        out.append(d)
    return out
