"""The statistics every stage and flow reports with, written once: t-intervals over seeds, Welch's t-test with the
95% interval of the difference of means, and Holm's step-down correction.

Pure numpy/scipy on host values, so kernels' study code, stages and flows all import it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05
Alternative = Literal["two-sided", "greater", "less"]


def summarize(values) -> dict:
    """Mean, standard error, finite count and the Student-t 95% interval of the finite values."""
    values = np.asarray(values, dtype=float)
    n = int(np.isfinite(values).sum())
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if n else float("nan")
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * se) if n > 1 else float("nan")
    return {"mean": mean, "stderr": se, "n": n, "ci95": [mean - half, mean + half]}


def welch(candidate, baseline, alternative: Alternative = "two-sided", alpha: float = ALPHA) -> dict:
    """Welch's t-test of ``candidate`` against ``baseline`` (non-finite values dropped) and the two-sided 95%
    interval of the difference of means (Welch-Satterthwaite degrees of freedom). ``alternative`` is scipy's:
    "greater" tests candidate > baseline. Zero variance on both sides: p is 1 for equal means, else 0 (two-sided)
    or by the sign of the difference (one-sided)."""
    a, b = np.asarray(candidate, float), np.asarray(baseline, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    out = {"difference": diff, "test": "Welch t-test", "alternative": alternative}
    if se == 0.0:
        if alternative == "greater":
            p = 0.0 if diff > 0 else 1.0
        elif alternative == "less":
            p = 0.0 if diff < 0 else 1.0
        else:
            p = 1.0 if diff == 0 else 0.0
        return out | {"ci95": [diff, diff], "t": float("nan"), "p_value": p, "significant": p < alpha}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    res = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    half = float(stats.t.ppf(1 - ALPHA / 2, df) * se)
    p = float(res.pvalue)
    return out | {"ci95": [diff - half, diff + half], "t": float(res.statistic), "p_value": p, "significant": p < alpha}


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (monotone, capped at 1)."""
    p = [float(x) for x in pvalues]
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out
