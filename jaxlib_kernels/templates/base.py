"""What a research template is (DESIGN.md section 2): plug-in, baselines, settings, profiles, evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Setting:
    """One experimental condition; held-out settings are never used to select candidates."""

    name: str
    env: str
    max_steps: int | None = None
    timesteps_scale: float = 1.0
    held_out: bool = False
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of a run: how many ideas, seeds, steps, and which settings and baselines."""

    name: str
    num_ideas: int
    seeds: int
    total_timesteps: int
    settings: tuple[str, ...]
    baselines: tuple[str, ...]
    search_generations: int = 6
    search_population: int = 32


@dataclasses.dataclass(frozen=True)
class Template:
    """A research problem: everything the stages need, with no Prefect or Ray inside."""

    name: str
    title: str
    plugin_name: str
    plugin_signature: str
    metric: str
    metric_description: str
    baselines: dict[str, Any]  # name -> symbolic expression
    baseline_labels: dict[str, str]
    settings: dict[str, Setting]
    profiles: dict[str, Profile]
    evaluate: Callable[..., dict] = dataclasses.field(repr=False)
    probe: Callable[[Callable], np.ndarray] = dataclasses.field(repr=False)
    search_space: dict = dataclasses.field(default_factory=dict)
    check: Callable[[Callable, Any], list[str]] | None = dataclasses.field(default=None, repr=False)

    def profile(self, name: str) -> Profile:
        from jaxlib_kernels.registry import Registry

        return Registry("profile", self.profiles)[name]

    def setting(self, name: str) -> Setting:
        from jaxlib_kernels.registry import Registry

        return Registry("setting", self.settings)[name]
