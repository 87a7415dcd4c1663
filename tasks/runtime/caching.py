"""Prefect conventions shared by the stage modules: caching keyed on inputs AND on the code and text that compute
a result, with results persisted under the run folder.

Prefect's ``TASK_SOURCE`` hashes the decorated function's own lines only, so a thin ``@task`` over a plain
function elsewhere would return stale results after that function changed. :class:`CodeKey` hashes the source of
the task's own module, the modules a stage names, the data files it reads (prompts), and, for a stage that takes
``template_name``, the template's code package (and its ``kernel_modules``) and the named parts of its text folder. Re-running a run id after a
change therefore recomputes the stages that change affects: editing ``prompts/paper/`` re-writes the papers (and
reviews them again) but computes no experiment; experiment units have their own keys (``tasks/experiments.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.filesystems import LocalFileSystem

from jaxlib_kernels.hashing import ROOT, files_hash, source_hash


def _top_level(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@dataclasses.dataclass
class CodeKey(CachePolicy):
    """Cache key part: the source of the task's module and of ``modules``, the files under ``paths`` (relative to
    the repository), and for a task with a ``template_name`` input the template's code (its package and its
``kernel_modules``) and ``template_parts`` of
    its text folder (``"*"``: the files directly in it, e.g. seed ideas and idea text; ``"paper"``: a sub-folder)."""

    modules: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    template_parts: tuple[str, ...] = ()

    def compute_key(self, task_ctx, inputs: dict[str, Any] | None, flow_parameters, **kwargs) -> str | None:
        own = (getattr(getattr(task_ctx, "task", None), "fn", None) and task_ctx.task.fn.__module__,) if task_ctx \
            else ()
        return code_key(tuple(m for m in own if m) + self.modules, self.paths, self.template_parts,
                        (inputs or {}).get("template_name"))


def code_key(modules: tuple[str, ...], paths: tuple[str, ...] = (), template_parts: tuple[str, ...] = (),
             template_name: str | None = None) -> str:
    """The hash :class:`CodeKey` computes (a plain function, so tests can see what a change does to it)."""
    h = hashlib.sha256(source_hash(modules, code_only=True).encode())
    h.update(files_hash([ROOT / p for p in paths]).encode())
    if template_name:
        from jaxlib_kernels.templates import make

        template = make(str(template_name))
        h.update(files_hash([template.code_dir], (".py",)).encode())
        h.update(source_hash(template.kernel_modules, code_only=True).encode())  # its kernel outside its folder
        for part in template_parts:
            folder = template.text_dir
            h.update(files_hash(_top_level(folder) if part == "*" else [folder / part]).encode())
    return h.hexdigest()


def stage(*, modules: tuple[str, ...] = (), paths: tuple[str, ...] = (), template_parts: tuple[str, ...] = (),
          **kwargs):
    """``@task`` with the cache policy every stage uses (inputs + code + text; results persisted, storage per run)."""
    kwargs.setdefault("cache_policy", INPUTS + TASK_SOURCE + CodeKey(
        modules=tuple(modules), paths=tuple(paths), template_parts=tuple(template_parts)))
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
