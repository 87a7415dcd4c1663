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
