"""The statistics every stage and flow reports with, written once: t-intervals over seeds, Welch's t-test with the
95% interval of the difference of means, Holm's step-down correction, the minimum number of seeds below which no
difference is called significant, and intervals kept inside a metric's range.

Pure numpy/scipy on host values, so kernels' study code, stages and flows all import it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 4  # fewer seeds than this in either arm of a comparison: its test is reported, never called significant
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


def _limits(bounds) -> tuple[float, float]:
    """``(low, high)`` of ``bounds`` with None read as unbounded on its side (-inf below, +inf above)."""
    low, high = bounds
    return (-np.inf if low is None else float(low), np.inf if high is None else float(high))


def clip_interval(interval, bounds=None) -> list[float]:
    """``interval`` cut to ``bounds`` (``(low, high)``, either may be None or infinite); as given without bounds."""
    lo, hi = (float(x) for x in interval)
    if bounds is None:
        return [lo, hi]
    low, high = _limits(bounds)
    return [float(min(max(lo, low), high)), float(max(min(hi, high), low))]


def difference_bounds(bounds=None):
    """The range a difference of two values of a metric with ``bounds`` can take (``None``: unbounded)."""
    if bounds is None:
        return None
    low, high = _limits(bounds)
    return (low - high, high - low)


def verdicts(pvalues: dict, seeds: dict, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> dict:
    """Per key (a setting): the Holm-adjusted p over all keys, whether both arms had ``min_seeds`` seeds, and whether
    the difference is called significant (enough seeds and adjusted p below ``alpha``)."""
    keys = list(pvalues)
    finite = [k for k in keys if pvalues[k] is not None and np.isfinite(float(pvalues[k]))]
    adjusted = dict(zip(finite, holm([pvalues[k] for k in finite]), strict=True))
    out = {}
    for k in keys:
        enough = int(seeds.get(k, 0)) >= min_seeds
        p_holm = adjusted.get(k, float("nan"))
        out[k] = {"p_holm": p_holm, "seeds_enough": enough, "min_seeds": min_seeds,
                  "significant": bool(enough and np.isfinite(p_holm) and p_holm < alpha)}
    return out
