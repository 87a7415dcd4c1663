"""Prefect conventions shared by the stage modules: input- and source-keyed caching with persisted results."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.filesystems import LocalFileSystem

CACHE_POLICY = INPUTS + TASK_SOURCE


def stage(**kwargs):
    """``@task`` with the cache policy every stage uses (results persisted; storage set per run)."""
    kwargs.setdefault("cache_policy", CACHE_POLICY)
    kwargs.setdefault("persist_result", True)
    return task(**kwargs)


def storage(path: Path) -> LocalFileSystem:
    """Result storage inside the run folder, so re-running a run id finds its cached task results.

    Prefect needs the block saved server-side; its name is derived from the folder, so a resumed run reuses it.
    """
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    block = LocalFileSystem(basepath=str(path))
    block.save(f"scientist-results-{hashlib.sha1(str(path).encode()).hexdigest()[:16]}", overwrite=True)
    return block
