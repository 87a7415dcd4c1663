"""Test-wide settings: offline litellm, CPU JAX, a compilation cache shared by the whole suite."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SCIENTIST_MODEL", "RAY_ADDRESS", "PREFECT_API_URL"):
    os.environ.pop(key, None)
