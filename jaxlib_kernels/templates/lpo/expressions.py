"""The ``lpo`` baselines as symbolic expressions, so novelty, the paper's formulas and codegen treat them like
candidates (the tree language is :mod:`jaxlib_kernels.symbolic`): the drift language's baselines
(:mod:`jaxlib_kernels.search.drift`), shared with every drift template."""

from jaxlib_kernels.search.drift import DPO, EXPRESSIONS, KL, LABELS, NO_DRIFT, PPO_CLIP

__all__ = ["DPO", "EXPRESSIONS", "KL", "LABELS", "NO_DRIFT", "PPO_CLIP"]
