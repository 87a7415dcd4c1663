"""Shared helpers of the benchmark scripts: machine and version facts, timing, markdown tables, JSON output."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("jax", "jaxlib", "navix", "gymnax", "flax", "optax", "numpy", "gymnasium", "minigrid",
            "stable-baselines3", "torch", "prefect", "ray")


def early_devices(argv: list[str] | None) -> int | None:
    """``--devices`` read before JAX starts (None: ``devices.force_cpu_devices``' default, one per usable core)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--devices", type=int, default=None)
    return pre.parse_known_args(argv)[0].devices


def versions(packages: Sequence[str] = PACKAGES) -> dict:
    out = {}
    for package in packages:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import jax

        device = jax.devices()[0]
        info["jax_backend"] = jax.default_backend()
        info["device"] = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    except Exception as exc:  # noqa: BLE001 - facts only
        info["jax_error"] = repr(exc)
    return info


def timed(fn: Callable[[], object], block: Callable[[object], object] = lambda x: x) -> float:
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def jax_memory_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of a compiled XLA executable (its peak device memory, roughly)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - getattr(m, "alias_size_in_bytes", 0))
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def compile_and_time(peers: dict, args: tuple, repeats: int, final_of: Callable[[dict], np.ndarray]) -> dict:
    """Compile every peer's jitted ``fn`` on ``args`` (timed apart, ``lower().compile()``), run it once (timed
    too), then ``repeats`` more runs of all peers interleaved. ``peers``: label -> (jitted fn, its params, which are
    appended to ``args``); ``final_of(host metrics)`` gives the final return per seed. Returns label -> row."""
    import jax

    rows, compiled = {}, {}
    for label, (fn, params) in peers.items():
        start = time.perf_counter()
        compiled[label] = fn.lower(*args, params).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(compiled[label](*args, params))  # first run (compiled already): timed too
        first_s = time.perf_counter() - start
        final = np.asarray(final_of(jax.tree_util.tree_map(np.asarray, out["metrics"])))
        rows[label] = {"compile_s": compile_s, "times_s": [first_s], "final_return_mean": float(final.mean()),
                       "final_return_per_seed": final.tolist(), "memory_bytes": jax_memory_bytes(compiled[label])}
    for _ in range(repeats):
        for label, (_, params) in peers.items():
            rows[label]["times_s"].append(timed(lambda c=compiled[label], p=params: c(*args, p), jax.block_until_ready))
    return rows


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(x):
        if isinstance(x, float):
            if np.isnan(x):
                return "-"
            if abs(x) >= 1e6:
                return f"{x / 1e6:.2f} M"
            if abs(x) >= 1e4:
                return f"{x / 1e3:.1f} k"
            if abs(x) >= 100:
                return f"{x:.0f}"
            return f"{x:.3g}"
        return "-" if x is None else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def write(result: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    return out


def mib(x: int | None) -> float | None:
    return None if x is None else x / 2**20
