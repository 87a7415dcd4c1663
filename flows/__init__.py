"""Prefect flows of jax-scientist (ARCHITECTURE.md)."""

import jaxlib_kernels  # noqa: F401 - its process settings (OpenBLAS threads) before anything loads a BLAS
