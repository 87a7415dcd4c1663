"""``runs/archive.sqlite``: every evaluated candidate of every run, read by ideation (open-ended research)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

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
    PRIMARY KEY (run_id, idea, setting)
)
"""


def connect(path: Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute(SCHEMA)
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
        ))
    with connect(path) as con:
        con.executemany(f"INSERT OR REPLACE INTO candidates VALUES ({','.join('?' * 17)})", rows)
    return len(rows)


def candidates(path: Path, template: str) -> list[dict]:
    """Every archived candidate of a template, one dict per idea, with its mean over training settings."""
    if not Path(path).exists():
        return []
    with connect(path) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute(
            "SELECT run_id, idea, title, expression, source, AVG(CASE WHEN held_out = 0 THEN mean END) AS train_mean, "
            "AVG(CASE WHEN held_out = 0 THEN mean - best_baseline_mean END) AS advantage, MAX(overall) AS overall "
            "FROM candidates WHERE template = ? GROUP BY run_id, idea ORDER BY train_mean DESC",
            (template,),
        ).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["expression"] = json.loads(d["expression"]) if d["expression"] else None
        out.append(d)
    return out
