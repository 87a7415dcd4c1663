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


def _stratified_bootstrap(scores, aggregate, reps: int = 2000, seed: int = 0) -> list[float]:
    """rliable's stratified bootstrap (seeds resampled within each setting), percentile 95% interval.

    ``rliable.library.get_interval_estimates`` does this through ``arch``, which fails to import with this
    environment's pandas 3 (arch 7) or rejects rliable's ``random_state`` (arch 8), so the resampling is written here
    and the aggregate is rliable's own ``metrics.aggregate_iqm``."""
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(reps, runs, tasks))
    samples = np.array([aggregate(np.take_along_axis(scores, i, axis=0)) for i in idx])
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def replication(scores: dict, baselines: dict, maximize: bool = True, alpha: float = ALPHA,
                candidate: str = "candidate", min_seeds: int = 0) -> dict:
    """A candidate against every baseline on fresh seeds: ``scores`` ``{setting: (S,)}``, ``baselines`` ``{setting:
    {name: (S,)}}``. One-sided Welch tests in the metric's direction per (setting, baseline), Holm-corrected across
    all the pairs (``p_holm``, ``significant``), and the IQM of every method over settings x seeds (rliable's
    ``aggregate_iqm``) with a stratified-bootstrap 95% interval. A pair with fewer than ``min_seeds`` seeds in an
    arm is reported and never ``significant`` (``seeds_enough`` false; the paper's replication uses
    :data:`MIN_SEEDS`). The research tree's replication and the discovery engine's admission both call this."""
    from rliable import metrics  # rliable.library needs arch, whose releases do not import with pandas 3 here

    alternative = "greater" if maximize else "less"
    tests = []
    for setting, cand in scores.items():
        for name, base in baselines[setting].items():
            t = welch(cand, base, alternative=alternative, alpha=alpha)
            tests.append({"setting": setting, "baseline": name, "mean": float(np.mean(cand)),
                          "baseline_mean": float(np.mean(base)), "t": t["t"], "p": t["p_value"],
                          "seeds": int(min(np.size(cand), np.size(base)))})
    for t, p in zip(tests, holm(t["p"] for t in tests), strict=True):
        t["p_holm"] = p
        t["seeds_enough"] = t["seeds"] >= min_seeds
        t["significant"] = bool(p < alpha and t["seeds_enough"])
    settings = list(scores)
    matrix = {candidate: np.stack([np.asarray(scores[s], dtype=float) for s in settings], axis=1)}
    for name in next(iter(baselines.values()), {}):
        matrix[name] = np.stack([np.asarray(baselines[s][name], dtype=float) for s in settings], axis=1)
    iqm = {k: {"iqm": float(metrics.aggregate_iqm(v)), "ci95": _stratified_bootstrap(v, metrics.aggregate_iqm),
               "mean": float(np.mean(v))} for k, v in matrix.items()}
    return {"tests": tests, "iqm": iqm, "alpha": alpha, "family": "every (setting, baseline) pair",
            "alternative": alternative, "min_seeds": min_seeds}
