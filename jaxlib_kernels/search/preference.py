"""The preference language: offline preference-optimisation losses in ``z = beta * rho`` (dpo's plug-in,
``preference_loss(rho, beta)``; DiscoPOP, Lu et al., 2024).

Trees over one variable, ``z``, with the preference operators ``logsig`` (-log sigmoid), ``sig``, ``expneg``
(exp(-x)) beside the generic ones. The probe is what training sees of a loss: ``d loss / dz`` on a grid of rho at
two betas (central differences here; the template's jax probe computes the same quantity from source), in units of
DPO's RMS gradient there. A plausible loss is finite, mostly decreasing in z (the winner is preferred), not flat
and of bounded gradient. Mutations are DiscoPOP's moves written as operators: a margin (z -> z - m), a temperature
(z -> z / t), a convex blend with another base loss, a LRML-style blend modulated by sigmoid(z / tau), an
asymmetric weight for rho < 0 (as PADLL), a retuned constant.
"""

from __future__ import annotations

import numpy as np

from jaxlib_kernels import symbolic
from jaxlib_kernels.search import trees
from jaxlib_kernels.search.candidates import Candidate
from jaxlib_kernels.search.language import FormulaLanguage

VARIABLES = {"z": ("(beta * rho)", "z")}
ARGS = ("rho", "beta")

PROBE_RHO = np.linspace(-40.0, 40.0, 33)
PROBE_BETAS = (0.05, 0.1)
NOVELTY_THRESHOLD = 0.1
DIVERSITY = 0.25
MAX_MUTATIONS = 3


def _dpo_grad_over_beta(z: np.ndarray) -> np.ndarray:
    return -1.0 / (1.0 + np.exp(z))  # d/dz of -log sigmoid(z)


PROBE_SCALE = float(np.sqrt(np.mean(np.concatenate(
    [np.square(_dpo_grad_over_beta(b * PROBE_RHO)) for b in PROBE_BETAS]))))

_Z = np.concatenate([b * PROBE_RHO for b in PROBE_BETAS])
_H = 1e-4
BASE_LOSSES = {
    "logistic": (["logsig", "z"], "the logistic loss -log sigmoid(z)"),
    "hinge": (["relu", ["sub", 1.0, "z"]], "the hinge loss max(0, 1 - z)"),
    "exponential": (["expneg", "z"], "the exponential loss exp(-z)"),
    "squared": (["sq", ["sub", "z", 1.0]], "the squared loss (z - 1)^2"),
}
HEADLINES = {"margin": "Margin", "temperature": "Tempered", "blend": "Blended", "modulate": "Modulated",
             "asym": "Asymmetric", "const": "Retuned"}


def values(expr, z: np.ndarray = _Z) -> np.ndarray:
    return symbolic.evaluate_env(expr, {"z": z})


def behaviour(expr) -> np.ndarray:
    """d loss / dz on the probe grid (central differences): the same quantity as the template's probe."""
    return (values(expr, _Z + _H) - values(expr, _Z - _H)) / (2 * _H)


def distance(f: np.ndarray, g: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(f) - np.asarray(g))))) / PROBE_SCALE


def plausibility(expr) -> tuple[float, list[str]]:
    """A score in [0, 1] for how much the tree behaves like a preference loss, and the reasons it loses points."""
    v, g = values(expr), behaviour(expr)
    edge = values(expr, np.array([-15.0, 15.0]))
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and np.all(np.isfinite(edge))):
        return 0.0, ["not finite on the probe grid"]
    score, notes = 1.0, []
    decreasing = float(np.mean(g < 0))
    if decreasing < 0.5:
        return 0.0, ["increases with the margin on most of the grid: it would prefer the rejected completion"]
    if decreasing < 0.8:
        score *= 0.6
        notes.append("increases with the margin on part of the grid")
    if np.abs(g).max() > 50:
        score *= 0.5
        notes.append("very steep gradients")
    if np.abs(g).max() < 1e-3:
        return 0.0, ["flat: no gradient"]
    return score, notes


def mutate(cand: Candidate, pool: list[Candidate], rng: np.random.Generator) -> Candidate | None:
    """One change of a loss (``kinds``: margin, temperature, blend, modulate, asym, const)."""
    expr = cand.expr
    nodes = list(trees.paths(expr))
    consts = [(p, n) for p, n in nodes if isinstance(n, float) and p]
    kinds = ["margin", "temperature", "blend", "modulate", "asym"] + (["const"] if consts else [])
    kind = str(rng.choice(kinds))
    if kind == "margin":
        m = float(rng.choice([0.1, 0.25, 0.5, 1.0]))
        new, desc = trees.substitute(expr, "z", ["sub", "z", m]), f"asks for a margin: z is replaced by z - {m:g}"
    elif kind == "temperature":
        t = float(rng.choice([0.5, 0.7, 1.5, 2.0]))
        new = trees.substitute(expr, "z", ["mul", round(1.0 / t, 4), "z"])
        desc = f"is tempered: z is replaced by z / {t:g}"
    elif kind == "blend":
        name = str(rng.choice(list(BASE_LOSSES)))
        other, text = BASE_LOSSES[name]
        w = float(rng.choice([0.25, 0.5, 0.75]))
        new, desc = ["add", ["mul", w, expr], ["mul", round(1 - w, 4), other]], f"is blended {w:g} : {1 - w:g} with {text}"
    elif kind == "modulate":
        name = str(rng.choice(list(BASE_LOSSES)))
        other, text = BASE_LOSSES[name]
        tau = float(rng.choice([0.05, 0.25, 0.5, 1.0]))
        w = ["sig", ["mul", round(1.0 / tau, 4), "z"]]
        new = ["add", ["mul", ["sub", 1.0, w], expr], ["mul", w, other]]
        desc = f"hands over to {text} for large margins, weighted by sigmoid(z / {tau:g}) as in LRML"
    elif kind == "asym":
        a, b = (1.0, float(rng.choice([0.5, 1.5, 2.0]))) if rng.random() < 0.5 else (float(rng.choice([0.5, 0.8])), 1.0)
        new, desc = ["mul", ["ifpos", "z", a, b], expr], f"weighs pairs with rho >= 0 by {a:g} and rho < 0 by {b:g}"
    else:
        p, value = consts[rng.integers(len(consts))]
        factor = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        new = trees.replace(expr, p, round(value * factor, 4))
        desc = f"changes the constant {value:.3g} to {value * factor:.3g}"
    try:
        symbolic.validate(new, VARIABLES)
    except symbolic.ExpressionError:
        return None
    return Candidate(new, cand.parent, cand.mutations + [desc], cand.kinds + [kind], cand.prior)


def contrast(f: np.ndarray, g: np.ndarray, label: str) -> str | None:
    """Where loss gradient ``f`` (a candidate's probe) differs from ``g`` (``label``'s): on pairs the policy ranks
    wrongly (z < 0) and rightly (z > 0), how hard it pushes z up compared with ``label``. None for other grids."""
    if f.size != _Z.size or g.size != _Z.size:
        return None
    tol = 0.02 * PROBE_SCALE
    parts = []
    for name, region in (("wrongly (z < 0)", _Z < 0), ("rightly (z > 0)", _Z > 0)):
        pf, pg = float(np.mean(-f[region])), float(np.mean(-g[region]))  # the push towards larger z
        if pg > tol and pf <= 0.1 * pg:
            parts.append(f"it stops pushing on pairs ranked {name}, where {label} pushes")
        elif pg <= tol and pf > tol:
            parts.append(f"it pushes on pairs ranked {name}, where {label} does not")
        elif pg > tol and pf > tol and not 0.8 <= pf / pg <= 1.25:
            parts.append(f"it pushes {pf / pg:.2g} times as hard as {label} on pairs ranked {name}")
    if not parts:
        return f"On the probe grid its gradient differs little from {label}'s."
    return "On the probe grid " + "; ".join(parts) + "."


LANGUAGE = FormulaLanguage(
    name="preference", variables=VARIABLES, args=ARGS, behaviour=behaviour, plausibility=plausibility, mutate=mutate,
    scale=PROBE_SCALE, headlines=HEADLINES, constants=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0), filler=["logsig", "z"],
    novelty_threshold=NOVELTY_THRESHOLD, diversity=DIVERSITY, max_size=40, max_mutations=MAX_MUTATIONS,
    idea_source={"z": ("z", "z")}, probe_baselines=True, contrast=contrast,
)
