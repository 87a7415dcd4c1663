"""The run folder of ARCHITECTURE.md section 3: paths, atomic JSON writes, run.json, and a lock per run id."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import re
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from jaxlib_kernels.files import write_atomic

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "navix", "evosax", "gymnax", "prefect", "ray", "litellm", "pandas")


class RunFolderError(RuntimeError):
    """The run folder cannot be used (not writable, locked by another process, bad id)."""


def new_run_id(template: str) -> str:
    return f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{template}-{uuid.uuid4().hex[:6]}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise RunFolderError(f"run id {run_id!r} must be letters, digits, '.', '_' or '-' (at most 100)")
    return run_id


def _default(obj: Any):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def json_safe(data: Any) -> Any:
    """``data`` as plain JSON values (numpy scalars and arrays, paths converted as :func:`write_json` writes them)."""
    return json.loads(json.dumps(data, default=_default, allow_nan=True))


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename), so a killed process never leaves half a file."""
    return write_atomic(path, json.dumps(data, indent=2, default=_default, allow_nan=True))


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def check_writable(path: Path, what: str = "the folder") -> Path:
    """Make ``path`` if needed and prove it writable (a probe file), or raise :class:`RunFolderError`.

    A probe and not ``os.access``: root passes every permission check but still meets read-only mounts,
    ``/proc`` and full disks.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    return path


def slug(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (s or "idea")[:limit]


class RunFolder:
    """``runs/<run_id>/`` and the files in it."""

    def __init__(self, runs_dir: str | Path, run_id: str):
        self.runs_dir = Path(runs_dir).resolve()
        self.run_id = check_run_id(run_id)
        self.path = self.runs_dir / run_id
        self._lock_file = None

    # paths
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def ideas_json(self) -> Path:
        return self.path / "ideas.json"

    @property
    def units_dir(self) -> Path:
        return self.path / "units"

    @property
    def results_store(self) -> Path:
        """Where Prefect persists task results and cache records of this run."""
        return self.path / ".prefect-results"

    @property
    def archive(self) -> Path:
        return self.runs_dir / "archive.sqlite"

    def idea_dir(self, name: str) -> Path:
        return self.path / "ideas" / name

    def exists(self) -> bool:
        return self.run_json.exists()

    def create(self) -> None:
        """Make the folder, checking it is writable; a clear :class:`RunFolderError` otherwise."""
        check_writable(self.path, "the run folder")

    def lock(self) -> None:
        """Hold an exclusive lock on the run for this process; a second process on the same id is refused."""
        self.create()
        f = open(self.path / ".lock", "w")  # noqa: SIM115 - held for the life of the run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RunFolderError(
                f"run {self.run_id} is in use by another process (lock {self.path / '.lock'}); "
                "wait for it to finish or choose another --run-id"
            ) from None
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def update_run_json(self, **fields: Any) -> dict:
        data = read_json(self.run_json, {}) or {}
        data.update(fields)
        write_json(self.run_json, data)
        return data


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
