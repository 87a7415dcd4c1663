"""The unit result of the template contract (``Template.evaluate``): ``{"x": (T,), "curve": (S, T), "final": (S,),
**extras}`` with ``S`` seeds, checked where a unit is computed (``tasks/experiments.py``) and where it is read
(``tasks/aggregation.py``)."""

from __future__ import annotations

import numpy as np


class SchemaError(ValueError):
    """A unit result that does not follow the template's result schema."""


def check_result(result: dict, n_seeds: int) -> None:
    """Raise :class:`SchemaError` unless ``result`` has x (T,), curve (S, T) and final (S,)."""
    missing = [k for k in ("x", "curve", "final") if k not in result]
    if missing:
        raise SchemaError(f"unit result lacks {', '.join(missing)} (has {', '.join(sorted(result))})")
    x, curve, final = (np.asarray(result[k]) for k in ("x", "curve", "final"))
    if x.ndim != 1 or curve.shape != (n_seeds, x.shape[0]) or final.shape != (n_seeds,):
        raise SchemaError(f"unit result shapes x {x.shape}, curve {curve.shape}, final {final.shape} do not match "
                          f"{n_seeds} seeds (expected (T,), ({n_seeds}, T), ({n_seeds},))")
