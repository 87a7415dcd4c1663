"""The ``dpo`` baselines: preference-optimisation losses from the papers' formulas, as plug-in source.

Every loss is ``preference_loss(rho, beta) -> per-pair loss of rho's shape`` with
``rho = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))`` and ``z = beta * rho``. Formulas:
DPO (Rafailov et al., 2023) ``-log sigmoid(z)``; IPO (Azar et al., 2023) ``(rho - 1 / (2 beta))^2``; SLiC
(Zhao et al., 2023) ``relu(1 - z)``; and the losses DiscoPOP discovered (Lu et al., 2024, appendix E, in its
"mathematical representation", the corrected form the paper's IMDb experiment used, with tau = 0.05):

* LRML ``(1 - sigmoid(z / tau)) * f_dpo(z) + sigmoid(z / tau) * exp(-z)`` (E.6; "DiscoPOP")
* PADLL ``0.9 * (1 - 0.5 * [rho < 0]) * f_dpo(z)`` (E.3)
* AQL ``q f_dpo(z) + (1 - q) f_slic(z)``, ``q = sigmoid(tau m2 - z)``, ``m2 = 0.5 + 0.01 (E[sigmoid(z / tau)] - 0.5)``
  (E.2; the mean is over the batch)
* AQFL ``r f_dpo(z) + (1 - r) f_slic(z)``, ``r = sigmoid(0.1 |z / tau - m2|)``,
  ``m2 = m1 + 0.05 (sigmoid(E[z / tau]) - m1)``, ``m1 = E[sigmoid(-z / tau)] Var[z / tau]`` (E.4; the update
  ``m2`` follows the discovered code, where the sigmoid is of the batch mean; the printed equation's brackets
  differ)
* DBAQL ``sigmoid(Var[z / tau]) f_dpo(z / 0.9) + (1 - sigmoid(Var[z / tau])) exp(-0.9 z)`` (E.1)
* CELL ``0.5 f_dpo(z) + 0.5 exp(-z)`` (E.5)

The sources below are the implementation (the experiments load them as any candidate); the expression trees
(over ``z``, see :data:`VARIABLES`) are kept for those that are elementwise in ``z``, for novelty and the search.
"""

from __future__ import annotations

# the dpo template's variables for symbolic expressions: name -> (jnp source inside preference_loss, LaTeX), and
# the plug-in's arguments: the preference language's
from jaxlib_kernels.search.preference import ARGS, VARIABLES  # noqa: F401 - re-exported

TAU = 0.05

_HEAD = "import jax\nimport jax.numpy as jnp\n\n\n"


def _module(doc: str, body: str) -> str:
    return f'{_HEAD}def preference_loss(rho, beta):\n    """{doc}"""\n{body}'


SOURCES = {
    "dpo": _module("DPO (Rafailov et al., 2023): -log sigmoid(beta rho).",
                   "    return jax.nn.softplus(-beta * rho)\n"),
    "ipo": _module("IPO (Azar et al., 2023): (rho - 1 / (2 beta))^2.",
                   "    return jnp.square(rho - 1.0 / (2.0 * beta))\n"),
    "slic": _module("SLiC / hinge (Zhao et al., 2023): relu(1 - beta rho).",
                    "    return jax.nn.relu(1.0 - beta * rho)\n"),
    "lrml": _module(
        "LRML / DiscoPOP (Lu et al., 2024, E.6): logistic and exponential losses blended by sigmoid(z / tau).",
        "    z = beta * rho\n"
        "    w = jax.nn.sigmoid(z / 0.05)\n"
        "    return (1.0 - w) * jax.nn.softplus(-z) + w * jnp.exp(-z)\n",
    ),
    "padll": _module(
        "PADLL (Lu et al., 2024, E.3): the logistic loss, decayed 0.9 and halved again for rho < 0.",
        "    decay = 0.9 * (1.0 - 0.5 * (rho < 0).astype(rho.dtype))\n"
        "    return decay * jax.nn.softplus(-beta * rho)\n",
    ),
    "aql": _module(
        "AQL (Lu et al., 2024, E.2): logistic and hinge blended by an adaptive quantile weight (batch mean).",
        "    z = beta * rho\n"
        "    tau = 0.05\n"
        "    m2 = 0.5 + 0.01 * (jnp.mean(jax.nn.sigmoid(z / tau)) - 0.5)\n"
        "    q = jax.nn.sigmoid(tau * m2 - z)\n"
        "    return q * jax.nn.softplus(-z) + (1.0 - q) * jax.nn.relu(1.0 - z)\n",
    ),
    "aqfl": _module(
        "AQFL (Lu et al., 2024, E.4): logistic and hinge blended by the distance to an adaptive quantile.",
        "    z = beta * rho\n"
        "    tau = 0.05\n"
        "    u = z / tau\n"
        "    m1 = jnp.mean(jax.nn.sigmoid(-u)) * jnp.var(u)\n"
        "    m2 = m1 + 0.05 * (jax.nn.sigmoid(jnp.mean(u)) - m1)\n"
        "    r = jax.nn.sigmoid(0.1 * jnp.abs(u - m2))\n"
        "    return r * jax.nn.softplus(-z) + (1.0 - r) * jax.nn.relu(1.0 - z)\n",
    ),
    "dbaql": _module(
        "DBAQL (Lu et al., 2024, E.1): logistic and exponential blended by sigmoid of the batch variance.",
        "    z = beta * rho\n"
        "    c = jax.nn.sigmoid(jnp.var(z / 0.05))\n"
        "    return c * jax.nn.softplus(-z / 0.9) + (1.0 - c) * jnp.exp(-0.9 * z)\n",
    ),
    "cell": _module(
        "CELL (Lu et al., 2024, E.5): the mean of the logistic and the exponential loss.",
        "    z = beta * rho\n"
        "    return 0.5 * jax.nn.softplus(-z) + 0.5 * jnp.exp(-z)\n",
    ),
}

LABELS = {"dpo": "DPO", "ipo": "IPO", "slic": "SLiC", "lrml": "LRML (DiscoPOP)", "padll": "PADLL", "aql": "AQL",
          "aqfl": "AQFL", "dbaql": "DBAQL", "cell": "CELL"}

_SIG = r"\sigma\left(z / \tau\right)"
LATEX = {
    "dpo": r"-\log\sigma(z)",
    "ipo": r"\left(\rho - \tfrac{1}{2\beta}\right)^2",
    "slic": r"\max(0, 1 - z)",
    "lrml": rf"\left(1 - {_SIG}\right)\left(-\log\sigma(z)\right) + {_SIG}\, e^{{-z}}",
    "padll": r"0.9\left(1 - 0.5\cdot\mathbb{1}[\rho < 0]\right)\left(-\log\sigma(z)\right)",
    "aql": r"q\left(-\log\sigma(z)\right) + (1 - q)\max(0, 1 - z),\ q = \sigma(\tau m_2 - z),\ "
           r"m_2 = 0.5 + 0.01\left(\mathbb{E}[\sigma(z/\tau)] - 0.5\right)",
    "aqfl": r"r\left(-\log\sigma(z)\right) + (1 - r)\max(0, 1 - z),\ r = \sigma(0.1\,|z/\tau - m_2|),\ "
            r"m_2 = m_1 + 0.05\left(\sigma(\mathbb{E}[z/\tau]) - m_1\right),\ "
            r"m_1 = \mathbb{E}[\sigma(-z/\tau)]\,\mathrm{Var}[z/\tau]",
    "dbaql": r"c\left(-\log\sigma(z/0.9)\right) + (1 - c)\, e^{-0.9 z},\ c = \sigma\left(\mathrm{Var}[z/\tau]\right)",
    "cell": r"\tfrac12\left(-\log\sigma(z)\right) + \tfrac12 e^{-z}",
}

DESCRIPTIONS = {
    "dpo": "the logistic (Bradley-Terry) loss of DPO",
    "ipo": "IPO's squared regression of rho onto 1 / (2 beta)",
    "slic": "the hinge loss of SLiC-HF",
    "lrml": "DiscoPOP's log-ratio modulated loss, tau = 0.05 (non-convex, with a local minimum for rho < 0)",
    "padll": "DiscoPOP's performance-adaptive decay logistic loss",
    "aql": "DiscoPOP's adaptive quantile loss (uses a batch mean)",
    "aqfl": "DiscoPOP's adaptive quantile feedback loss (uses batch mean and variance)",
    "dbaql": "DiscoPOP's dynamic blended adaptive quantile loss (uses the batch variance)",
    "cell": "DiscoPOP's combined exponential and logistic loss",
}

# expression trees over z (elementwise losses only)
_DPO = ["logsig", "z"]
EXPRESSIONS = {
    "dpo": _DPO,
    "slic": ["relu", ["sub", 1.0, "z"]],
    "lrml": ["add", ["mul", ["sub", 1.0, ["sig", ["mul", 1.0 / TAU, "z"]]], _DPO],
         ["mul", ["sig", ["mul", 1.0 / TAU, "z"]], ["expneg", "z"]]],
    "padll": ["mul", ["ifpos", "z", 0.9, 0.45], _DPO],
    "cell": ["add", ["mul", 0.5, _DPO], ["mul", 0.5, ["expneg", "z"]]],
}
