"""New Prefect databases start from a migrated, empty template (tasks/runtime/prefect_db.py).

The session's ``scientist server`` (the ``prefect_api`` fixture, on a fresh home) leaves the template when none
exists; every later temporary server of the suite (the killed lpo run, the Ray test's ``flaky`` run, the CLI and
fault tests) then starts on a copy of it, so a broken template fails those runs. Here: what the template holds,
that a database holding work is never taken as one, and that seeding never overwrites a database.
"""

from __future__ import annotations

import sqlite3
from importlib.metadata import version

import pytest

from tasks.runtime import prefect_db


def rows(db, table: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture(scope="module")
def template(prefect_api):
    """The template the session's server left (or an earlier one of this Prefect version)."""
    path = prefect_db.template_path()
    assert path.exists(), f"no template at {path} after a scientist server started"
    return path


def test_the_template_is_migrated_has_the_block_types_and_holds_no_work(template):
    assert template.name == f"empty-{version('prefect')}.db"
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()
    assert rows(template, "block_type") > 10
    for table in (*prefect_db.HELD, "configuration"):
        assert rows(template, table) == 0, table


def test_a_new_database_is_a_copy_and_an_existing_one_is_left_alone(template, tmp_path, monkeypatch):
    db = tmp_path / "run" / ".prefect" / "prefect.db"
    assert prefect_db.seed(db)
    assert rows(db, "block_type") == rows(template, "block_type")
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO configuration (id, key, value) VALUES ('x', 'mine', '{}')")
    assert not prefect_db.seed(db)  # exists: untouched
    assert rows(db, "configuration") == 1
    monkeypatch.setenv("SCIENTIST_CACHE_DIR", str(tmp_path / "no-cache"))
    assert not prefect_db.seed(tmp_path / "other.db") and not (tmp_path / "other.db").exists()  # no template


def test_a_database_holding_work_or_not_migrated_is_not_kept_as_the_template(template, tmp_path, monkeypatch):
    monkeypatch.setenv("SCIENTIST_CACHE_DIR", str(tmp_path / "cache"))
    busy = tmp_path / "busy.db"
    with sqlite3.connect(template) as src, sqlite3.connect(busy) as dst:
        src.backup(dst)
    with sqlite3.connect(busy) as con:
        con.execute("INSERT INTO log (id, name, level, message, timestamp) VALUES ('l', 'n', 20, 'm', '2026-01-01')")
    assert not prefect_db.keep_template(busy)
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).close()
    assert not prefect_db.keep_template(blank)
    assert not prefect_db.template_path().exists()
    assert not list((tmp_path / "cache").rglob("*.db"))  # no half-written file left either
    fresh = tmp_path / "fresh.db"
    with sqlite3.connect(template) as src, sqlite3.connect(fresh) as dst:
        src.backup(dst)
    assert prefect_db.keep_template(fresh) and prefect_db.template_path().exists()
    assert not prefect_db.keep_template(fresh)  # one template per version, never replaced
