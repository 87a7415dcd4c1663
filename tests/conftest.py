"""Test-wide settings: offline litellm, CPU JAX, a compilation cache shared by the whole suite."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SCIENTIST_MODEL", "RAY_ADDRESS", "PREFECT_API_URL"):
    os.environ.pop(key, None)


import pytest


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """A module that starts Ray in this process (a flow run in-process) stops it, so the next module starts clean."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def pytest_collection_modifyitems(session, config, items):
    """Files with the most ``slow`` tests first (a stable sort), so that with ``-n 2 --dist loadfile`` (make test)
    the long end-to-end files start at once on both workers instead of leaving one worker alone at the end."""
    slow_per_file: dict[str, int] = {}
    for item in items:
        slow_per_file.setdefault(item.nodeid.split("::")[0], 0)
        if item.get_closest_marker("slow"):
            slow_per_file[item.nodeid.split("::")[0]] += 1
    items.sort(key=lambda item: -slow_per_file[item.nodeid.split("::")[0]])
