"""Seeds split over local devices (jaxlib_kernels.devices): same results as one device, one compilation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlib_kernels import devices

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: the device count is read by XLA only when JAX creates its CPU backend.
SCRIPT = r"""
import json, sys
from jaxlib_kernels import devices
forced = devices.force_cpu_devices(2)
import jax, numpy as np
from jaxlib_kernels import ppo
from jaxlib_kernels.profiling import count_compilations

config = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32)
seeds = [0, 1, 2, 3]
keys, init_keys = ppo.seed_keys(seeds)
params = ppo.init_params(config, init_keys)
train = ppo.make_train(config)
one = jax.jit(jax.vmap(train))(keys, params)  # the reference: every seed on the first device
split_fn = devices.population_jit(train, len(seeds))
split = split_fn(keys, params)
with count_compilations() as counter:
    jax.block_until_ready(split_fn(keys, params))
chunked_fn = devices.population_jit(train, len(seeds), chunk=1)  # lax.map, one seed at a time on each device
chunked = chunked_fn(keys, params)
with count_compilations() as chunked_counter:
    jax.block_until_ready(chunked_fn(keys, params))
metric = lambda out, k: np.asarray(out["metrics"][k]).tolist()
print(json.dumps({
    "forced": forced,
    "devices": len(jax.devices()),
    "one_devices": len(one["metrics"]["return_sum"].sharding.device_set),
    "split_devices": len(split["metrics"]["return_sum"].sharding.device_set),
    "chunked_devices": len(chunked["metrics"]["return_sum"].sharding.device_set),
    "recompiles": counter.compiles,
    "chunked_recompiles": chunked_counter.compiles,
    "one_return_sum": metric(one, "return_sum"),
    "split_return_sum": metric(split, "return_sum"),
    "one_policy_loss": metric(one, "policy_loss"),
    "split_policy_loss": metric(split, "policy_loss"),
    "chunked_policy_loss": metric(chunked, "policy_loss"),
    "one_mean_return": ppo.mean_return(jax.tree_util.tree_map(np.asarray, one["metrics"])).tolist(),
    "train_seeds_return": ppo.mean_return(ppo.train_seeds(config, None, seeds)).tolist(),
}))
"""


def test_seeds_split_over_two_cpu_devices_match_one_device_and_compile_once():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["forced"] and run["devices"] == 2
    assert (run["one_devices"], run["split_devices"], run["chunked_devices"]) == (1, 2, 2)  # really split
    assert run["recompiles"] == 0 and run["chunked_recompiles"] == 0  # the second call reuses the executable
    assert run["split_return_sum"] == run["one_return_sum"]  # same seeds, same episodes, whatever the split
    np.testing.assert_allclose(run["split_policy_loss"], run["one_policy_loss"], rtol=1e-4, atol=1e-6)
    # ppo.train_seeds splits the seeds itself in a process with 2 devices, and learns the same
    np.testing.assert_allclose(run["train_seeds_return"], run["one_mean_return"], rtol=1e-5)
    # chunked: each device runs its seeds one after another (lax.map) instead of vmapped. The float sums run in
    # another order, and PPO's sampled actions amplify that over training, so the first updates are compared.
    np.testing.assert_allclose(np.asarray(run["chunked_policy_loss"])[:, :4],
                               np.asarray(run["one_policy_loss"])[:, :4], rtol=1e-3, atol=1e-6)


def test_population_devices_takes_the_most_devices_that_divide_the_population():
    fake = ["d0", "d1", "d2", "d3"]
    assert devices.population_devices(8, fake) == fake
    assert devices.population_devices(6, fake) == ["d0", "d1", "d2"]
    assert devices.population_devices(7, fake) == ["d0"]
    assert devices.population_devices(1, fake) == ["d0"]
    assert devices.population_devices(2, fake[:1]) == ["d0"]


def test_force_cpu_devices_refuses_once_jax_has_started(monkeypatch):
    jax.devices()  # the backends of this test process exist now
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    assert devices.force_cpu_devices(4) is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_multi_thread_eigen=false"  # left as it was
    with pytest.raises(ValueError, match="device count"):
        devices.force_cpu_devices(0)
