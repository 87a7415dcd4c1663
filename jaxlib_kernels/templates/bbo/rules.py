"""A parametric family of ES update rules, as traced JAX (for the search) and as plug-in source (for candidates).

A rule of the family ranks the population, gives the best ``mu = max(1, floor(P * elite))`` members weights of a
shape (``log``: CMA-ES's ``log(mu + 1/2) - log(rank + 1)``, ``linear``: ``mu - rank``, ``equal``), moves the mean
by ``lr_mean`` times the weighted mean of their steps, and adapts ``std`` by one of three rules: ``snes`` (the
separable NES log-std step ``exp(lr_std / 2 * sum_i w_i (z_i^2 - 1))``, Wierstra et al., 2014), ``elite`` (the
cross-entropy method's smoothed elite spread), ``fixed``; finally ``std`` is shrunk by the factor
``1 - anneal * progress``. :func:`family_update` evaluates any member with its parameters as traced arrays, so the
offline search evaluates a whole population of rules in one compiled call; :func:`render` writes the same rule as
plug-in source with the constants inlined (a test checks both agree). :func:`lift` recognises such source (any
docstring, any float literals: the research tree's tune, improve and ablate nodes rewrite them) and
:func:`lifted_update` runs it with every float literal a traced value, so rules of one structure (weights, std rule,
annealing or not) share one compiled program whatever their constants.
"""

from __future__ import annotations

import ast
import functools
import itertools

import jax.numpy as jnp

from jaxlib_kernels.plugin import lift_literals

WEIGHTS = ("log", "linear", "equal")
STD_RULES = ("snes", "elite", "fixed")
RANGES = {"elite": (0.05, 1.0), "lr_mean": (0.1, 2.0), "lr_std": (0.0, 1.0), "anneal": (0.0, 0.1)}
DEFAULT = {"elite": 0.5, "weights": "log", "lr_mean": 1.0, "std_rule": "snes", "lr_std": 0.3, "anneal": 0.0}

_WEIGHT_SRC = {
    "log": "jnp.log(mu + 0.5) - jnp.log(r + 1.0)",
    "linear": "mu - r",
    "equal": "jnp.ones_like(r)",
}
_STD_SRC = {
    "snes": "std * jnp.exp(0.5 * {lr_std!r} * jnp.sum(w[:, None] * (z ** 2 - 1.0), axis=0))",
    "elite": "(1.0 - {lr_std!r}) * std + {lr_std!r} * jnp.sqrt(jnp.sum(w[:, None] * (population - mean) ** 2, "
             "axis=0) + 1e-20)",
    "fixed": "std",
}


def normalise(params: dict) -> dict:
    """Defaults filled in, choices checked, numbers clipped to their ranges and rounded (the canonical form)."""
    out = {**DEFAULT, **{k: v for k, v in params.items() if k in DEFAULT}}
    if out["weights"] not in WEIGHTS or out["std_rule"] not in STD_RULES:
        raise ValueError(f"weights must be one of {WEIGHTS} and std_rule one of {STD_RULES}")
    for k, (lo, hi) in RANGES.items():
        out[k] = round(float(min(max(float(out[k]), lo), hi)), 4)
    return out


def as_arrays(params: dict) -> dict:
    """Traceable form: choices as integer indices, numbers as float32."""
    p = normalise(params)
    return {"elite": jnp.float32(p["elite"]), "weights": jnp.int32(WEIGHTS.index(p["weights"])),
            "lr_mean": jnp.float32(p["lr_mean"]), "std_rule": jnp.int32(STD_RULES.index(p["std_rule"])),
            "lr_std": jnp.float32(p["lr_std"]), "anneal": jnp.float32(p["anneal"])}


def family_update(theta: dict, population, fitness, mean, std, progress):
    """The rule of parameters ``theta`` (arrays, see :func:`as_arrays`), traceable in ``theta``."""
    n = fitness.shape[0]
    ranks = jnp.argsort(jnp.argsort(fitness))
    r = ranks.astype(jnp.float32)
    mu = jnp.maximum(1.0, jnp.floor(n * theta["elite"]))
    shapes = jnp.stack([jnp.log(mu + 0.5) - jnp.log(r + 1.0), mu - r, jnp.ones_like(r)])
    w = jnp.where(r < mu, shapes[theta["weights"]], 0.0)
    w = w / jnp.sum(w)
    step = jnp.sum(w[:, None] * (population - mean), axis=0)
    new_mean = mean + theta["lr_mean"] * step
    z = (population - mean) / std
    lr = theta["lr_std"]
    stds = jnp.stack([
        std * jnp.exp(0.5 * lr * jnp.sum(w[:, None] * (z ** 2 - 1.0), axis=0)),
        (1.0 - lr) * std + lr * jnp.sqrt(jnp.sum(w[:, None] * (population - mean) ** 2, axis=0) + 1e-20),
        std,
    ])
    new_std = stds[theta["std_rule"]] * (1.0 - theta["anneal"] * progress)
    return new_mean, new_std


def render(params: dict, doc: str | None = None) -> str:
    """Plug-in source of the rule ``params`` (only the chosen branches, constants inlined)."""
    p = normalise(params)
    std_line = _STD_SRC[p["std_rule"]].format(lr_std=p["lr_std"])
    anneal = f" * (1.0 - {p['anneal']!r} * progress)" if p["anneal"] else ""
    doc = (doc or "An ES update rule of the bbo family.").replace('"""', "'''")
    return "\n".join([
        "import jax.numpy as jnp",
        "",
        "",
        "def update(population, fitness, mean, std, progress):",
        f'    """{doc}',
        "",
        f"    family parameters: {', '.join(f'{k}={p[k]}' for k in sorted(p))}",
        '    """',
        "    n = fitness.shape[0]",
        "    r = jnp.argsort(jnp.argsort(fitness)).astype(jnp.float32)",
        f"    mu = jnp.maximum(1.0, jnp.floor(n * {p['elite']!r}))",
        f"    w = jnp.where(r < mu, {_WEIGHT_SRC[p['weights']]}, 0.0)",
        "    w = w / jnp.sum(w)",
        f"    new_mean = mean + {p['lr_mean']!r} * jnp.sum(w[:, None] * (population - mean), axis=0)",
        "    z = (population - mean) / std",
        f"    new_std = ({std_line}){anneal}" if anneal else f"    new_std = {std_line}",
        "    return new_mean, new_std",
        "",
    ])


@functools.cache
def _structures() -> dict[str, ast.Module]:
    """The family's source structures (:func:`render` with its literals lifted): ``ast.dump`` -> syntax tree."""
    out = {}
    for weights, std_rule, anneal in itertools.product(WEIGHTS, STD_RULES, (0.0, 0.01)):
        module, _ = lift_literals(render({"weights": weights, "std_rule": std_rule, "anneal": anneal}), "update")
        out[ast.dump(module)] = module
    return out


def lift(source: str) -> tuple[str, tuple[float, ...]] | None:
    """(structure, constants) of plug-in source that :func:`render` wrote up to its docstring and float literals
    (their values in source order), else None."""
    lifted = lift_literals(source, "update")
    if lifted is None or (structure := ast.dump(lifted[0])) not in _structures():
        return None
    return structure, lifted[1]


@functools.cache
def lifted_update(structure: str):
    """``update(constants, population, fitness, mean, std, progress)`` of a :func:`lift` structure: the rendered
    rule (the family's own text, never a candidate's) with ``constants[i]`` for its i-th float literal."""
    namespace: dict = {}
    exec(compile(_structures()[structure], "<bbo family rule>", "exec"), namespace)  # noqa: S102 - our own render
    return namespace["update"]


def to_latex(params: dict) -> str:
    """The rule's right-hand side ``(m', sigma')`` as LaTeX, with its weights and elite size."""
    p = normalise(params)
    w = {"log": r"w_i \propto \log(\mu+\tfrac12)-\log i", "linear": r"w_i \propto \mu+1-i",
         "equal": r"w_i = 1/\mu"}[p["weights"]]
    s = {"snes": rf"\sigma \odot \exp\big(\tfrac{{{p['lr_std']:g}}}{{2}} \sum_i w_i (z_i^2-1)\big)",
         "elite": rf"(1-{p['lr_std']:g})\,\sigma + {p['lr_std']:g}\sqrt{{\sum_i w_i (x_{{i:P}}-m)^2}}",
         "fixed": r"\sigma"}[p["std_rule"]]
    anneal = rf"\,(1-{p['anneal']:g}\,\tfrac{{n}}{{N}})" if p["anneal"] else ""
    return (rf"\Big(m + {p['lr_mean']:g} \sum_{{i\le\mu}} w_i (x_{{i:P}} - m),\ {s}{anneal}\Big),\quad "
            rf"\mu = \max(1, \lfloor {p['elite']:g} P \rfloor),\ {w}")
