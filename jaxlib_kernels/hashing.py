"""Content hashes of source files and data folders, for cache keys that change exactly when the code or text
that computes a result changes."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def files_hash(paths: list[Path], suffixes: tuple[str, ...] | None = None) -> str:
    """sha256 over the relative names and bytes of every file under ``paths`` (sorted; caches skipped)."""
    h = hashlib.sha256()
    for base in paths:
        base = Path(base)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or (suffixes and f.suffix not in suffixes):
                continue
            h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def source_hash(modules: tuple[str, ...] | list[str], code_only: bool = False) -> str:
    """Hash of the source of modules (a package: every ``.py`` file in its folder)."""
    paths = []
    for name in modules:
        module = importlib.import_module(name)
        path = Path(module.__file__).resolve()
        paths.append(path.parent if path.name == "__init__.py" else path)
    return files_hash(paths, (".py",) if code_only else None)
