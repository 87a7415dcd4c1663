"""The drift language: ``drift(ratio, advantage, progress) >= 0`` of mirror learning (lpo's and marl's plug-in).

Trees over ``r``, ``A``, ``log r``, ``1 - r`` and ``p = n/N`` (:data:`jaxlib_kernels.symbolic.VARIABLES`). The
probe is the drift's values on a grid of (r, A, n/N); distances are in units of PPO clip's RMS drift there. A
plausible drift is finite, non-negative, zero at r = 1 and actually constrains the ratio. Mutations: retuned
constants, progress-dependent schedules as in TA-LPO, asymmetric clip ranges, added penalty terms,
split-advantage crossovers, tanh saturation, |A| in place of A (a negative child is rectified with a ReLU).

Also the drift baselines (PPO clip, the KL drift, no drift, LPO's closed DPO form) and :func:`contract`, the
``Template`` fields every drift template shares (plug-in, baselines, offline search, probe units).
"""

from __future__ import annotations

import numpy as np

from jaxlib_kernels import symbolic
from jaxlib_kernels.search import trees
from jaxlib_kernels.search.candidates import Candidate
from jaxlib_kernels.search.language import FormulaLanguage
from jaxlib_kernels.templates.base import Arg, Baseline, PluginSpec

# ---- the baselines ---------------------------------------------------------------------------------------------

PPO_CLIP = ["relu", ["mul", ["sub", "r", ["clip", "r", 0.8, 1.2]], "A"]]
KL = ["mul", 3.0, ["sub", ["neg", "omr"], "logr"]]  # beta (r - 1 - log r) >= 0: a KL(pi_old || pi) estimator
NO_DRIFT = 0.0
# DPO, the closed form of the discovered LPO drift (Lu et al., 2022, alpha = 2, beta = 0.6)
_RM1_A = ["mul", ["neg", "omr"], "A"]
_LOGR_A = ["mul", "logr", "A"]
DPO = [
    "ifpos",
    "A",
    ["relu", ["sub", _RM1_A, ["mul", 2.0, ["tanh", ["mul", 0.5, _RM1_A]]]]],
    ["relu", ["sub", _LOGR_A, ["mul", 0.6, ["tanh", ["mul", 1.0 / 0.6, _LOGR_A]]]]],
]
EXPRESSIONS = {"ppo_clip": PPO_CLIP, "kl": KL, "no_drift": NO_DRIFT, "dpo": DPO}
LABELS = {"ppo_clip": "PPO clip", "kl": "KL drift", "no_drift": "No drift", "dpo": "LPO (DPO form)"}

# ---- the probe ---------------------------------------------------------------------------------------------------

NOVELTY_THRESHOLD = 0.1  # below this behavioural distance (in PPO-clip units) an idea counts as a known drift
DIVERSITY = 0.25  # two ideas of one run differ at least this much
MAX_MUTATIONS = 3

_R = np.exp(np.linspace(np.log(0.5), np.log(2.0), 25))[:, None, None]
_A = np.linspace(-2.0, 2.0, 17)[None, :, None]
_P = np.array([0.0, 0.5, 1.0])[None, None, :]
_EDGE_R = np.array([1e-3, 1.0, 50.0])[:, None, None]


def behaviour(expr) -> np.ndarray:
    """The drift's values on the probe grid, flattened (numpy evaluation of the tree)."""
    return symbolic.evaluate_numpy(expr, _R, _A, _P).reshape(-1)


def behaviour_of(fn) -> np.ndarray:
    """The values of any drift ``fn(r, A, p)`` (numpy arrays of the full grid's shape in, an array out) on the probe
    grid, flattened like :func:`behaviour`: a learned drift's behaviour, for distillation into a formula."""
    r, a, p = np.broadcast_arrays(_R, _A, _P)
    return np.asarray(fn(r, a, p), np.float64).reshape(-1)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


# the scale of behaviours: PPO clip's RMS drift on the probe grid
SCALE = _rms(symbolic.evaluate_numpy(PPO_CLIP, _R, _A, _P))


def distance(f: np.ndarray, g: np.ndarray) -> float:
    """Behavioural distance: RMS difference on the probe grid in units of PPO clip's RMS drift."""
    return _rms(np.asarray(f) - np.asarray(g)) / SCALE


def plausibility(expr) -> tuple[float, list[str]]:
    """A score in [0, 1] for how much the tree behaves like a drift, and the reasons it loses points."""
    values = symbolic.evaluate_numpy(expr, _R, _A, _P)
    edge = symbolic.evaluate_numpy(expr, _EDGE_R, _A, _P)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(edge))):
        return 0.0, ["not finite on the probe grid"]
    score, notes = 1.0, []
    if values.min() < -1e-9:
        return 0.0, ["negative somewhere"]
    at_one = symbolic.evaluate_numpy(expr, np.ones((1, 1, 1)), _A, _P)
    if np.abs(at_one).max() > 1e-6:
        score *= 0.5
        notes.append("not zero at r = 1")
    far = values[[0, -1]].mean()
    if far < 0.05:
        score *= 0.3
        notes.append("barely constrains the ratio")
    if values.max() > 1e3:
        score *= 0.5
        notes.append("very large values")
    return score, notes


# ---- mutations --------------------------------------------------------------------------------------------

SCHEDULES = [
    (["sub", 1.0, "p"], "weakens as training progresses (factor 1 - n/N)", "Annealed"),
    (["add", 0.5, "p"], "tightens as training progresses (factor 0.5 + n/N)", "Tightening"),
    (["add", 1.0, ["mul", 2.0, "p"]], "grows threefold over training (factor 1 + 2 n/N)", "Progress-scaled"),
]
PENALTIES = [
    (["sq", "logr"], "a quadratic log-ratio penalty"),
    (["mul", ["abs", "A"], ["sq", "omr"]], "an advantage-weighted quadratic penalty on r - 1"),
    (["relu", ["mul", ["neg", "omr"], "A"]], "a penalty on moving the ratio in the advantage's direction"),
]
HEADLINES = {
    "const": "Retuned", "asym": "Asymmetric", "penalty": "Penalised", "crossover": "Split-advantage",
    "saturate": "Saturating", "magnitude": "Magnitude-weighted", "nonneg": "Rectified",
}


def mutate(cand: Candidate, pool: list[Candidate], rng: np.random.Generator) -> Candidate | None:
    """One change of a drift (``kinds``: schedule, penalty, crossover, saturate, magnitude, asym, const)."""
    expr = cand.expr
    nodes = list(trees.paths(expr))
    clips = [(p, n) for p, n in nodes if isinstance(n, list) and n[0] == "clip"]
    consts = [(p, n) for p, n in nodes if isinstance(n, float) and p and not trees.parent_is(expr, p, "clip")]
    kinds = ["schedule", "penalty", "crossover", "saturate", "magnitude"]
    if clips:
        kinds += ["asym", "asym"]
    if consts:
        kinds += ["const"]
    kind = str(rng.choice(kinds))
    if kind == "schedule":
        if symbolic.uses(expr, "p"):
            return None
        sched, text, _ = SCHEDULES[rng.integers(len(SCHEDULES))]
        new, desc = ["mul", sched, expr], f"is scaled so that the trust region {text}"
    elif kind == "penalty":
        term, text = PENALTIES[rng.integers(len(PENALTIES))]
        c = float(rng.choice([0.1, 0.25, 0.5, 1.0]))
        new, desc = ["add", expr, ["mul", c, term]], f"gains {text} with weight {c:g}"
    elif kind == "crossover":
        other = pool[rng.integers(len(pool))]
        if other.expr == expr or symbolic.dumps(other.expr) == symbolic.dumps(expr):
            return None
        if rng.random() < 0.5:
            new, desc = ["ifpos", "A", expr, other.expr], f"keeps its form for positive advantages and takes {other.parent}'s for negative ones"
        else:
            new, desc = ["ifpos", "A", other.expr, expr], f"takes {other.parent}'s form for positive advantages and keeps its own for negative ones"
    elif kind == "saturate":
        c = float(rng.choice([0.5, 1.0, 2.0]))
        new, desc = ["mul", c, ["tanh", ["mul", 1.0 / c, expr]]], f"is saturated at {c:g} with tanh"
    elif kind == "magnitude":
        leaves = [p for p, n in nodes if n == "A" and p and not trees.parent_is(expr, p, "abs")]
        if not leaves:
            return None
        p = leaves[rng.integers(len(leaves))]
        new, desc = trees.replace(expr, p, ["abs", "A"]), "uses the advantage's magnitude |A| in place of A in one term"
    elif kind == "asym":
        p, node = clips[rng.integers(len(clips))]
        lo, hi = node[2], node[3]
        if rng.random() < 0.5:
            lo = float(np.clip(1.0 - (1.0 - lo) * rng.choice([0.5, 1.5, 2.0]), 0.05, 0.99))
        else:
            hi = float(1.0 + (hi - 1.0) * rng.choice([0.5, 1.5, 2.0]))
        new = trees.replace(expr, p, ["clip", node[1], round(lo, 4), round(hi, 4)])
        desc = f"clips the ratio to the asymmetric range [{lo:.3g}, {hi:.3g}]"
    else:  # const
        p, value = consts[rng.integers(len(consts))]
        factor = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        new = trees.replace(expr, p, round(value * factor, 4))
        desc = f"changes the constant {value:.3g} to {value * factor:.3g}"
    try:
        symbolic.validate(new)
    except symbolic.ExpressionError:
        return None
    mutations, kinds_done = cand.mutations + [desc], cand.kinds + [kind]
    if symbolic.evaluate_numpy(new, _R, _A, _P).min() < -1e-9:
        new = ["relu", new]
        mutations.append("is rectified with a ReLU to stay non-negative")
        kinds_done.append("nonneg")
    return Candidate(new, cand.parent, mutations, kinds_done, cand.prior)


def describe(cand: Candidate, words: list[str]) -> tuple[list[str], dict, int]:
    """A progress-dependent drift is headlined by its schedule (TA-LPO's temporal awareness) and is more
    interesting."""
    temporal = symbolic.uses(cand.expr, "p")
    if temporal:
        schedule = next((w for s, _, w in SCHEDULES if trees.contains(cand.expr, s)), "Progress-aware")
        words = [schedule, *words]
    return words, {"temporal": temporal}, 2 * temporal


_REGIONS = (("r < 0.8", _R[:, 0, 0] < 0.8), ("0.8 \u2264 r \u2264 1.2", (_R[:, 0, 0] >= 0.8) & (_R[:, 0, 0] <= 1.2)),
            ("r > 1.2", _R[:, 0, 0] > 1.2))
_SIGNS = (("A < 0", _A[0, :, 0] < 0), ("A > 0", _A[0, :, 0] > 0))


def contrast(f: np.ndarray, g: np.ndarray, label: str) -> str | None:
    """Where on the probe grid drift ``f`` (a candidate) differs from ``g`` (``label``, the nearest known drift), by
    ratio range (below, inside, above PPO's clip range) and sign of A: a penalty that is gone, one that appears, one
    that is stronger or weaker; and whether it changes over training where ``g`` does not. None for other grids."""
    shape = (_R.shape[0], _A.shape[1], _P.shape[2])
    if f.size != np.prod(shape) or g.size != np.prod(shape):
        return None
    f, g = f.reshape(shape), g.reshape(shape)
    tol = 0.02 * SCALE
    found: dict[tuple[str, str], list[str]] = {}
    for r_name, r_in in _REGIONS:
        for a_name, a_in in _SIGNS:
            cf, cg = (float(np.mean(np.abs(x[r_in][:, a_in]))) for x in (f, g))
            if cg > tol and cf <= 0.1 * cg:
                what = "gone"
            elif cg <= tol and cf > tol:
                what = "appears"
            elif cg > tol and cf > tol and not 0.8 <= cf / cg <= 1.25:
                what = f"{cf / cg:.2g} times as strong"
            else:
                continue
            found.setdefault((r_name, what), []).append(a_name)
    by_change: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (r_name, what), signs in found.items():
        by_change.setdefault((what, tuple(signs)), []).append(r_name)
    parts = []
    for (what, signs), ranges in by_change.items():
        where = "whatever the sign of A" if len(signs) == 2 else f"when {signs[0]}"
        span = "every ratio" if len(ranges) == len(_REGIONS) else " and ".join(ranges)
        if span == "every ratio" and len(signs) == 2 and what not in ("gone", "appears"):
            parts.append(f"the drift is {what} as {label}'s everywhere")
            continue
        if what == "appears":
            parts.append(f"a penalty appears for {span} {where}")
        elif what == "gone":
            parts.append(f"{label}'s penalty for {span} is gone {where}")
        else:
            parts.append(f"the penalty for {span} is {what} as {label}'s {where}")
    varies = lambda x: float(np.max(np.abs(x[:, :, 0] - x[:, :, -1]))) > tol
    if varies(f) and not varies(g):
        parts.append("the drift changes over training")
    elif varies(g) and not varies(f):
        parts.append(f"the drift no longer changes over training as {label}'s does")
    if not parts:
        return f"On the probe grid the drift differs little from {label}'s."
    text = "; ".join(parts)
    return f"On the probe grid: {text[0].lower()}{text[1:]}." if not text.startswith(label) else f"On the probe grid: {text}."


LANGUAGE = FormulaLanguage(
    name="drift", variables=symbolic.VARIABLES, args=("ratio", "advantage", "progress"), behaviour=behaviour,
    plausibility=plausibility, mutate=mutate, scale=SCALE, headlines=HEADLINES, constants=(0.1, 0.2, 0.5, 1.0, 2.0),
    filler=PPO_CLIP, novelty_threshold=NOVELTY_THRESHOLD, diversity=DIVERSITY, max_size=60,
    max_mutations=MAX_MUTATIONS, label_suffix=" drift", describe=describe, contrast=contrast,
)

# ---- the Template fields of a drift template ---------------------------------------------------------------------

BASELINES = {
    name: Baseline(name, LABELS[name], symbolic.render_source(expr, "drift", doc=f"{LABELS[name]} drift."),
                   expression=expr, latex=symbolic.to_latex(expr))
    for name, expr in EXPRESSIONS.items()
}


def contract(ratio: str = "probability ratio pi(a|s) / pi_old(a|s)", advantage: str = "normalised advantage") -> dict:
    """The ``Template`` fields of a template whose plug-in is a drift (its words for the ratio and advantage
    arguments): the plug-in, the drift baselines, the offline search and code stage of the drift language, its
    probe units and novelty threshold, its formula's left-hand side and search space."""
    return {
        "plugin": PluginSpec("drift", (Arg("ratio", "(...) float32", ratio),
                                       Arg("advantage", "ratio's shape, float32", advantage),
                                       Arg("progress", "() float32", "fraction of training done, n/N in [0, 1]")),
                             "array of ratio's shape, >= 0"),
        "baselines": BASELINES,
        "propose": LANGUAGE.propose,
        "render": LANGUAGE.render,
        "probe_scale": SCALE,
        "novelty_threshold": NOVELTY_THRESHOLD,
        "formula_lhs": r"D(r, A, \tfrac{n}{N})",
        "search_space": LANGUAGE.search_space,
    }
