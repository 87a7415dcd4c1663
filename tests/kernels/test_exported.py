"""Traced kernels kept across processes (jaxlib_kernels/exported.py).

A new ``Cached`` object stands for a new process: it has no program in memory and must find the one the first
saved. The PPO check uses the lpo smoke runs' program (2 seeds, budget 8192 on the smoke profile's training grid), so it is the very file
the suite's lpo runs then load in their Ray workers.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlib_kernels import exported
from jaxlib_kernels.profiling import count_compilations


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


exported.register_namedtuple(Pair)
TRACES = []


def member(key, pair: Pair):
    TRACES.append(1)  # runs once per trace
    noise = jax.random.normal(key, pair.a.shape)
    return {"sum": pair.a * pair.b + noise, "n": jnp.sum(pair.b)}


def kernel():
    return jax.jit(jax.vmap(member))


def inputs(n=3):
    keys = jax.vmap(jax.random.key)(jnp.arange(n, dtype=jnp.uint32))
    return keys, Pair(jnp.arange(n * 4.0).reshape(n, 4), jnp.ones((n, 4)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIENTIST_EXPORT_CACHE_DIR", str(tmp_path / "jax-exported"))
    monkeypatch.delenv("SCIENTIST_EXPORT_CACHE", raising=False)
    TRACES.clear()
    return tmp_path / "jax-exported"


def test_a_second_process_loads_the_program_instead_of_tracing_it_and_gets_the_same_numbers(cache):
    first = exported.cached(kernel(), "toy", {"width": 4})
    out = first(*inputs())
    assert first.exported == 1 and len(TRACES) == 1 and len(list(cache.glob("toy-*.jaxexport"))) == 1
    with count_compilations() as counter:
        again = first(*inputs())
    assert counter.compiles == 0 and len(TRACES) == 1  # a second call compiles and traces nothing
    second = exported.cached(kernel(), "toy", {"width": 4})
    loaded = second(*inputs())
    assert second.loaded == 1 and second.exported == 0 and len(TRACES) == 1  # not traced again
    for name in ("sum", "n"):
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(loaded[name]))
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(again[name]))
    plain = kernel()(*inputs())
    np.testing.assert_array_equal(np.asarray(plain["sum"]), np.asarray(loaded["sum"]))


def test_another_configuration_or_shape_is_another_program(cache):
    exported.cached(kernel(), "toy", {"width": 4})(*inputs(3))
    other = exported.cached(kernel(), "toy", {"width": 5})
    other(*inputs(3))
    other(*inputs(2))  # another population size: a new signature
    assert other.exported == 2 and other.loaded == 0
    assert len(list(cache.glob("toy-*.jaxexport"))) == 3


def test_a_damaged_file_is_traced_again_and_off_means_plain_jit(cache, monkeypatch, caplog):
    exported.cached(kernel(), "toy", 1)(*inputs())
    [path] = cache.glob("toy-*.jaxexport")
    path.write_bytes(b"not a program")
    with caplog.at_level(logging.WARNING, logger="jaxlib_kernels.exported"):
        out = exported.cached(kernel(), "toy", 1)(*inputs())
    assert "not loaded" in caplog.text and len(TRACES) == 2
    np.testing.assert_array_equal(np.asarray(out["sum"]), np.asarray(kernel()(*inputs())["sum"]))
    assert path.read_bytes() != b"not a program"  # replaced by a good one
    monkeypatch.setenv("SCIENTIST_EXPORT_CACHE", "0")
    assert exported.cache_dir() is None
    off = exported.cached(kernel(), "toy", 2)
    off(*inputs())
    assert off.exported == 0 and off.loaded == 0  # nothing new written
    assert len(list(cache.glob("toy-*.jaxexport"))) == 1


def test_ppo_through_the_interpreter_is_loaded_by_a_fresh_process_with_the_same_returns():
    """The real kernel: the lpo smoke runs' program. ``__wrapped__`` skips the per-process lru_cache: a new
    ``Cached``, as a new process (a Ray worker) makes."""
    from sizes import SMOKE_SIZES

    from jaxlib_kernels import interpreter, ppo
    from jaxlib_kernels.templates import make
    from jaxlib_kernels.templates.lpo.kernel import ppo_config

    if exported.cache_dir() is None:
        pytest.skip("no persistent compilation cache configured")
    template = make("lpo")
    seeds, budget = SMOKE_SIZES["lpo"]
    config = ppo_config(template.setting(template.profile("smoke").settings[0]), budget)  # the smoke training grid
    programs = interpreter.encode_population([interpreter.expression_of(template.load(
        template.baseline("ppo_clip").source))])
    first = ppo.train_programs(config, programs, list(range(seeds)))
    fresh = ppo._interpreted_population_train.__wrapped__(config, seeds, programs.ops.shape[1])
    keys, init_keys = ppo.seed_keys(list(range(seeds)))
    second = interpreter.train_population(lambda size, length: fresh, programs, keys,
                                          ppo.init_params(config, init_keys))
    assert fresh.loaded == 1
    np.testing.assert_array_equal(first["return_sum"], second["return_sum"])
    np.testing.assert_array_equal(first["episodes"], second["episodes"])
