"""New Prefect SQLite databases start as a copy of an empty, migrated one.

Prefect migrates a fresh SQLite database and registers its block types when its server first starts on it: on
this 2-core machine a server answered 22.7 s after its start on a fresh database and 10.1 s after its start on a
migrated one. Every ``scientist run`` without a ``PREFECT_API_URL`` has a database of its own
(``runs/<id>/.prefect/prefect.db``, see ``flows/cli.py``), and so did every new ``scientist server`` home: each
paid the migrations again.

The first server that migrates a database here leaves a copy of it, taken as soon as it answers and before any
flow run is written (SQLite's ``VACUUM INTO``, a consistent snapshot even while the server holds the file), as the
template of its Prefect version: ``.cache/prefect/empty-<version>.db`` (``SCIENTIST_CACHE_DIR`` moves ``.cache``).
A later new database is a copy of that template. Nothing else changes: the server still checks the migrations
and the block types on start (both already there). Any failure here only loses the saving.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELD = ("flow_run", "task_run", "deployment", "work_pool", "artifact", "log")  # rows a template must not have


def cache_root() -> Path:
    return Path(os.environ.get("SCIENTIST_CACHE_DIR") or ROOT / ".cache")


def template_path() -> Path:
    from importlib.metadata import version

    return cache_root() / "prefect" / f"empty-{version('prefect')}.db"


def sqlite_file(url: str | None) -> Path | None:
    """The file of a SQLite connection URL (``sqlite+aiosqlite:///path``), else None."""
    if not url or not url.startswith("sqlite") or ":///" not in url:
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def seed(db: Path) -> bool:
    """Start the missing database ``db`` as a copy of the template; True if it did."""
    template = template_path()
    if db.exists() or not template.exists():
        return False
    tmp = None
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=".prefect-db-")
        os.close(fd)
        with sqlite3.connect(template) as src, sqlite3.connect(tmp) as dst:
            src.backup(dst)
        os.replace(tmp, db)
    except (OSError, sqlite3.Error):
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        return False
    return True


def keep_template(db: Path) -> bool:
    """Snapshot the just-migrated database ``db`` as the template, unless one exists; True if it did."""
    template = template_path()
    if template.exists() or not db.exists():
        return False
    tmp = None
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=template.parent, prefix=".empty-", suffix=".db")
        os.close(fd)
        os.unlink(tmp)  # VACUUM INTO writes a new file
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE name='alembic_version'").fetchone():
                return False  # not migrated (yet)
            con.execute("VACUUM INTO ?", (tmp,))
        with sqlite3.connect(tmp) as con:
            if any(con.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in HELD):
                Path(tmp).unlink()
                return False  # it holds work already: not a template
            # what the server wrote besides the schema and block types (its telemetry session): not the next one's
            con.execute("DELETE FROM configuration")
        os.replace(tmp, template)  # atomic: two servers migrating at once both leave a whole template
    except (OSError, sqlite3.Error):
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        return False
    return True
