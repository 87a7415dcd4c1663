"""Traced kernels kept across processes: a jitted kernel is exported (``jax.export``) the first time any process
calls it with given shapes, and every later process loads that program instead of tracing the kernel again.

The persistent compilation cache saves only XLA's compile; every process still traces and lowers the kernel in
Python first. Measured on this 2-core machine (PPO through the interpreter on Empty-5x5, 2 seeds, warm
compilation cache): tracing and lowering took 4.0 s, loading the exported program and lowering its call 0.08 s,
its compile 0.5 s from the persistent cache either way, and the returns were the same numbers bit for bit. A run's
Ray worker meets a few such programs (one per setting), and each of the suite's processes meets its own.

A program's key: the kernel's name and static configuration, the tree, shapes and dtypes of its inputs, the
platform and number of devices, the versions of jax, jaxlib and the libraries kernels trace through (flax, optax,
navix, gymnax, jaxmarl, evosax, chex), and a hash of this package's Python source. A change to any of them is a
new program. Programs live beside the compilation cache, ``<JAX_COMPILATION_CACHE_DIR>-exported/``, and only when
that cache is configured (without it every process would compile the loaded program again anyway), and for
programs on one device (a population split over several devices is traced as before: calling its exported form
would need the same device mesh around it).
``SCIENTIST_EXPORT_CACHE_DIR`` puts them elsewhere; ``SCIENTIST_EXPORT_CACHE=0`` turns this off. A program that cannot be exported, saved or loaded is traced as
before; nothing here changes a result.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "navix", "gymnax", "jaxmarl", "evosax", "chex", "numpy")


@functools.cache
def _fingerprint() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from jaxlib_kernels.hashing import files_hash

    versions = []
    for lib in LIBRARIES:
        try:
            versions.append(f"{lib}={version(lib)}")
        except PackageNotFoundError:
            versions.append(f"{lib}=-")
    return ";".join(versions) + ";" + files_hash([PACKAGE], (".py",))


def cache_dir() -> Path | None:
    """Where exported programs are kept, or None when the export cache is off."""
    if os.environ.get("SCIENTIST_EXPORT_CACHE", "1").strip() == "0":
        return None
    if os.environ.get("SCIENTIST_EXPORT_CACHE_DIR"):
        return Path(os.environ["SCIENTIST_EXPORT_CACHE_DIR"])
    base = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not base:
        return None
    base = Path(base)
    return base.with_name(base.name + "-exported")


@functools.cache
def _register(cls: type, name: str) -> None:
    jax.export.register_namedtuple_serialization(cls, serialized_name=name)


def register_namedtuple(cls: type) -> type:
    """Let inputs or outputs of this NamedTuple type be serialized with an exported program."""
    _register(cls, f"{cls.__module__}.{cls.__qualname__}")
    return cls


def _signature(args: tuple) -> str:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    parts = [str(treedef)]
    for leaf in leaves:
        array = leaf if hasattr(leaf, "dtype") and hasattr(leaf, "shape") else np.asarray(leaf)
        parts.append(f"{tuple(array.shape)}:{array.dtype}")
    return "|".join(parts)


class Cached:
    """``jitted(*args)``, through an exported program per input signature (see the module docstring)."""

    def __init__(self, jitted: Callable, name: str, static: Any):
        self._jitted, self._name, self._static = jitted, name, repr(static)
        self._calls: dict[str, Callable] = {}
        self.loaded = 0  # programs this object loaded from the cache (for tests)
        self.exported = 0  # programs it traced and saved

    def __call__(self, *args):
        signature = _signature(args)
        fn = self._calls.get(signature)
        if fn is None:
            fn = self._calls[signature] = self._program(args, signature)
        return fn(*args)

    def _path(self, folder: Path, signature: str) -> Path:
        devices = jax.local_devices()
        key = "\n".join([self._name, self._static, signature, devices[0].platform, str(len(devices)), _fingerprint()])
        return folder / f"{self._name}-{hashlib.sha256(key.encode()).hexdigest()[:24]}.jaxexport"

    def _program(self, args: tuple, signature: str) -> Callable:
        folder = cache_dir()
        if folder is None:
            return self._jitted
        path = self._path(folder, signature)
        if path.exists():
            try:
                program = jax.export.deserialize(bytearray(path.read_bytes()))
                if program.nr_devices == 1:
                    self.loaded += 1
                    return jax.jit(program.call)
            except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: trace instead
                log.warning("exported program %s not loaded (%s: %s); tracing it", path.name, type(exc).__name__, exc)
        try:
            program = jax.export.export(self._jitted)(*args)
            if program.nr_devices != 1:  # the caller keeps those out (devices.kept_population_jit)
                return self._jitted
            blob = program.serialize()
        except Exception as exc:  # noqa: BLE001 - not exportable: the plain jit
            log.info("%s not exported (%s: %s)", self._name, type(exc).__name__, exc)
            return self._jitted
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            os.chmod(tmp, 0o644)  # readable by whoever shares the compilation cache
            os.replace(tmp, path)  # atomic: processes exporting the same program at once each leave a whole file
            self.exported += 1
        except OSError as exc:
            log.info("exported program not saved (%s)", exc)
        return jax.jit(program.call)


def cached(jitted: Callable, name: str, static: Any) -> Cached:
    """Wrap the jitted kernel ``jitted``; ``name`` and ``static`` (its static configuration, by ``repr``) key it."""
    return Cached(jitted, name, static)
