"""Pure JAX kernels of jax-scientist: environments, RL, ES and research templates.

Nothing here imports Prefect or Ray (ARCHITECTURE.md section 7).
"""
