"""A mixed search space (continuous, integer, categorical) over a latent real vector, for the sequence optimisers.

Every sequence optimiser (:mod:`.sequence`) searches a real vector with a Gaussian; a :class:`Space` maps that
*latent* vector to a configuration and back. Each parameter owns a slice of the latent vector, read in the unit box
``[-1, 1]``:

- :class:`Continuous` ``(name, low, high, log=False)``: one dimension, ``[-1, 1]`` mapped linearly onto
  ``[low, high]`` (onto ``[log low, log high]`` with ``log=True``), clipped to the box.
- :class:`Integer` ``(name, low, high)``: one dimension cut into ``high - low + 1`` bins of equal width, so every
  integer has the same chance under a sampler centred in the box (rounding a linear map would give the two end
  values half-width bins); encoding gives the centre of the value's bin.
- :class:`Categorical` ``(name, choices)``: one dimension per choice, the decoded choice the argmax. One dimension
  per choice rather than bins of one dimension because bins would impose an order the choices do not have (a move
  from the first to the third choice would pass through the second) and an isotropic or dimension-equivariant
  sampler (every optimiser here, the Evolution Transformer by construction) treats every choice alike: at the
  centre the argmax of i.i.d. Gaussians is uniform over the choices. Encoding puts +0.5 on the choice and -0.5 on
  the others, so a Gaussian of std 0.5 around an encoded configuration still tries the other choices now and then.

Decoding never fails on values: any latent vector of the right length gives a valid configuration. Values outside
the box are clipped (``+inf`` to ``high``, ``-inf`` to ``low``); a NaN reads as the centre of its parameter's range
(:data:`NAN_FALLBACK`: 0 in the box); a categorical ignores NaN entries and falls back to its first choice when all of
its entries are NaN. Encoding checks the configuration and refuses an invalid one (:class:`SpaceError`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

NAN_FALLBACK = 0.0  # where a NaN latent entry of a continuous or integer parameter reads: the centre of its range
CHOICE_ON, CHOICE_OFF = 0.5, -0.5  # a categorical's encoding


class SpaceError(ValueError):
    """An invalid parameter definition or configuration."""


def _unit(z: np.ndarray) -> np.ndarray:
    """Latent entries -> [0, 1]: NaN to the centre, clipped to the box (infinities to its faces)."""
    z = np.where(np.isnan(z), NAN_FALLBACK, z)
    return (np.clip(z, -1.0, 1.0) + 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class Continuous:
    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise SpaceError(f"{self.name}: need finite low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise SpaceError(f"{self.name}: a log scale needs low > 0, got {self.low}")

    size = 1

    def _ends(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)

    def decode(self, z: np.ndarray) -> float:
        t = float(_unit(z)[0])
        if t in (0.0, 1.0):  # the box's faces: the range's ends exactly
            return float(self.high if t else self.low)
        a, b = self._ends()
        v = a + t * (b - a)
        return float(min(max(math.exp(v) if self.log else v, self.low), self.high))

    def encode(self, value) -> np.ndarray:
        v = float(value)
        if not (self.low <= v <= self.high):
            raise SpaceError(f"{self.name}: {value!r} is outside [{self.low}, {self.high}]")
        a, b = self._ends()
        t = ((math.log(v) if self.log else v) - a) / (b - a)
        return np.array([2.0 * t - 1.0])

    def valid(self, value) -> bool:
        return isinstance(value, float) and self.low <= value <= self.high


@dataclasses.dataclass(frozen=True)
class Integer:
    name: str
    low: int
    high: int

    def __post_init__(self):
        if int(self.low) != self.low or int(self.high) != self.high or self.low > self.high:
            raise SpaceError(f"{self.name}: need integers low <= high, got [{self.low}, {self.high}]")

    size = 1

    @property
    def count(self) -> int:
        return int(self.high) - int(self.low) + 1

    def decode(self, z: np.ndarray) -> int:
        k = min(math.floor(float(_unit(z)[0]) * self.count), self.count - 1)
        return int(self.low) + k

    def encode(self, value) -> np.ndarray:
        if isinstance(value, bool) or int(value) != value or not (self.low <= value <= self.high):
            raise SpaceError(f"{self.name}: {value!r} is not an integer in [{self.low}, {self.high}]")
        t = (int(value) - int(self.low) + 0.5) / self.count  # the centre of the value's bin
        return np.array([2.0 * t - 1.0])

    def valid(self, value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclasses.dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))
        if not self.choices or len(set(self.choices)) != len(self.choices):
            raise SpaceError(f"{self.name}: need at least one choice and no repeats, got {self.choices!r}")

    @property
    def size(self) -> int:
        return len(self.choices)

    def decode(self, z: np.ndarray) -> object:
        z = np.where(np.isnan(z), -np.inf, z)  # a NaN entry never wins
        if np.all(z == -np.inf):
            return self.choices[0]  # nothing usable (all NaN or -inf): the first choice
        return self.choices[int(np.argmax(z))]

    def encode(self, value) -> np.ndarray:
        if value not in self.choices:
            raise SpaceError(f"{self.name}: {value!r} is not one of {self.choices!r}")
        out = np.full(self.size, CHOICE_OFF)
        out[self.choices.index(value)] = CHOICE_ON
        return out

    def valid(self, value) -> bool:
        return value in self.choices


Parameter = Continuous | Integer | Categorical


class Space:
    """Named parameters laid side by side in one latent vector (``dim`` entries)."""

    def __init__(self, params: Sequence[Parameter]):
        self.params = tuple(params)
        names = [p.name for p in self.params]
        if not names or len(set(names)) != len(names):
            raise SpaceError(f"a space needs parameters with distinct names, got {names}")
        self.slices, start = {}, 0
        for p in self.params:
            self.slices[p.name] = slice(start, start + p.size)
            start += p.size
        self.dim = start

    def __repr__(self) -> str:
        return f"Space({list(self.params)!r})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def _latent(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if z.shape != (self.dim,):
            raise SpaceError(f"a latent vector of this space has {self.dim} entries, got {z.size}")
        return z

    def decode(self, z) -> dict:
        """Any latent vector (dim,) -> a valid configuration (see the module docstring for non-finite entries)."""
        z = self._latent(z)
        return {p.name: p.decode(z[self.slices[p.name]]) for p in self.params}

    def decode_many(self, zs) -> list[dict]:
        """(P, dim) latent vectors -> P configurations."""
        return [self.decode(z) for z in np.asarray(zs, dtype=np.float64).reshape(-1, self.dim)]

    def encode(self, config: dict) -> np.ndarray:
        """A configuration -> its latent vector (dim,); :class:`SpaceError` on a missing, extra or invalid value."""
        if set(config) != set(self.names):
            raise SpaceError(f"configuration keys {sorted(config)} are not the space's {sorted(self.names)}")
        return np.concatenate([p.encode(config[p.name]) for p in self.params])

    def valid(self, config: dict) -> bool:
        return set(config) == set(self.names) and all(p.valid(config[p.name]) for p in self.params)

    def centre(self) -> np.ndarray:
        """The latent vector at the middle of every range (every choice alike): where the searches start."""
        return np.zeros(self.dim)
