"""Counting XLA compilations (optax's compile-count test, via jax.monitoring events)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jax import monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """How many backend compilations (and persistent-cache hits) happened inside the ``with`` block."""

    def __init__(self) -> None:
        self.compiles = 0
        self.compile_seconds = 0.0
        self.cache_hits = 0
        self.active = False

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if self.active and event == BACKEND_COMPILE_EVENT:
            self.compiles += 1
            self.compile_seconds += duration

    def _on_event(self, event: str, **_) -> None:
        if self.active and event == CACHE_HIT_EVENT:
            self.cache_hits += 1


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCounter]:
    counter = CompileCounter()
    monitoring.register_event_duration_secs_listener(counter._on_duration)
    monitoring.register_event_listener(counter._on_event)
    counter.active = True
    try:
        yield counter
    finally:
        counter.active = False
        monitoring.unregister_event_duration_listener(counter._on_duration)
        monitoring.unregister_event_listener(counter._on_event)
