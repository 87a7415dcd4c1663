"""The ``lpo`` baselines as symbolic expressions, so novelty, the paper's formulas and codegen treat them like
candidates (the tree language is :mod:`jaxlib_kernels.symbolic`)."""

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
