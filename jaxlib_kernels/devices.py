"""Spreading a population (seeds, candidates) over the local devices.

XLA:CPU runs one program on one "device". Inside it, only the matrix products use a second core, so a
``jit(vmap(train))`` over 8 PPO seeds keeps a 2-core machine about half busy (measured in
``benchmarks/ppo.py``). Asking XLA for one CPU device per core (``--xla_force_host_platform_device_count``)
and sharding the population axis over them runs the shards on separate threads, each on its own core. On
a GPU host the local devices are the GPUs, and the same sharding spreads seeds over them.

``force_cpu_devices`` must run before JAX creates its backends (before the first array or ``jax.devices()``);
afterwards it changes nothing and says so. ``population_jit`` works either way: with one device it is plain
``jax.jit(jax.vmap(fn))``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def force_cpu_devices(count: int | None = None) -> bool:
    """Ask XLA for ``count`` CPU devices (default: one per usable core). True if it will take effect.

    Sets JAX's ``jax_num_cpu_devices`` option and replaces any count in ``XLA_FLAGS`` (which child processes
    inherit). Returns False (and changes nothing) once JAX's backends exist, because XLA reads the count only
    when it creates the CPU client; a repeat of the count already set is True.
    """
    if count is None:
        count = usable_cores()
    if count < 1:
        raise ValueError(f"device count must be >= 1, got {count}")
    try:
        # JAX's public option for this process; its validator refuses a new value once the backends exist, which
        # is how we learn (without JAX's private xla_bridge) whether the count can still take effect.
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        return False
    # and the XLA flag, for the processes this one starts (Ray workers inherit XLA_FLAGS: tasks/experiments.py)
    flags = re.sub(rf"{FLAG}=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{FLAG}={count}"])
    return True


def population_devices(size: int, devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """The most local devices that split ``size`` members evenly (at least one)."""
    devices = list(devices if devices is not None else jax.local_devices())
    for n in range(min(len(devices), size), 0, -1):
        if size % n == 0:
            return devices[:n]
    return devices[:1]


def population_sharding(size: int, devices: Sequence[jax.Device] | None = None) -> NamedSharding:
    """A sharding that splits the leading (population) axis of every argument over the devices."""
    mesh = Mesh(np.asarray(population_devices(size, devices)), ("population",))
    return NamedSharding(mesh, PartitionSpec("population"))


def population_jit(member_fn: Callable, size: int, devices: Sequence[jax.Device] | None = None,
                   chunk: int | None = None, **jit_kwargs) -> Callable:
    """``jax.jit(jax.vmap(member_fn))`` with the population axis (leading axis of every input and output) split
    over the local devices that divide ``size``; one compiled executable, each shard on its own device.

    ``chunk``: vmap at most this many members at once on each device, one chunk after another
    (``lax.map(..., batch_size=chunk)`` inside ``shard_map``). A large vmapped population outgrows the caches
    of a CPU; measured with PPO on this machine, 32 seeds a device ran 8% faster in chunks of 8
    (``benchmarks/README.md``). Results match the plain vmap up to float summation order.
    """
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    sharding = population_sharding(size, devices)
    if chunk is None or chunk >= size // sharding.mesh.size:
        return jax.jit(jax.vmap(member_fn), in_shardings=sharding, out_shardings=sharding, **jit_kwargs)

    def local(*args):
        return jax.lax.map(lambda xs: member_fn(*xs), args, batch_size=chunk)

    # check_vma=False: the member function builds unsharded constants (zeros, iota) that meet the sharded
    # arguments inside lax.map's loop, which shard_map's varying-axes check rejects although every value here is
    # per-device anyway (nothing is communicated between shards).
    mapped = jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec, out_specs=sharding.spec,
                           check_vma=False)
    return jax.jit(mapped, in_shardings=sharding, out_shardings=sharding, **jit_kwargs)


def kept_population_jit(member_fn: Callable, size: int, name: str, static) -> Callable:
    """``population_jit(member_fn, size)``, its traced program kept across processes when it runs on one device
    (``jaxlib_kernels/exported.py``; ``name`` and ``static``, the configuration ``member_fn`` was built from, key
    it). A population split over several devices is traced in every process as before."""
    from jaxlib_kernels import exported

    jitted = population_jit(member_fn, size)
    return jitted if len(population_devices(size)) > 1 else exported.cached(jitted, name, static)
