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
forced = devices.force_cpu_devices(int(sys.argv[1]))
import jax, numpy as np
from jaxlib_kernels import ppo
from jaxlib_kernels.profiling import count_compilations

config = ppo.PPOConfig(total_timesteps=2048, num_envs=4, num_steps=32)
seeds = [0, 1, 2, 3]
keys = jax.vmap(jax.random.key)(jax.numpy.asarray(seeds, dtype=jax.numpy.uint32))
params = ppo.init_params(config, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
train = devices.population_jit(ppo.make_train(config), len(seeds))
out = train(keys, params)
with count_compilations() as counter:
    again = train(keys, params)
    jax.block_until_ready(again)
chunked = devices.population_jit(ppo.make_train(config), len(seeds), chunk=1)  # lax.map, one seed at a time
chunked_out = chunked(keys, params)
with count_compilations() as chunked_counter:
    jax.block_until_ready(chunked(keys, params))
print(json.dumps({
    "forced": forced,
    "devices": len(jax.devices()),
    "output_devices": len(out["metrics"]["return_sum"].sharding.device_set),
    "recompiles": counter.compiles,
    "chunked_recompiles": chunked_counter.compiles,
    "chunked_output_devices": len(chunked_out["metrics"]["return_sum"].sharding.device_set),
    "chunked_policy_loss": np.asarray(chunked_out["metrics"]["policy_loss"]).tolist(),
    "return_sum": np.asarray(out["metrics"]["return_sum"]).tolist(),
    "policy_loss": np.asarray(out["metrics"]["policy_loss"]).tolist(),
    "train_seeds_return": ppo.mean_return(ppo.train_seeds(config, None, seeds)).tolist(),
}))
"""


def run_with_devices(count: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(count)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_seeds_split_over_two_cpu_devices_match_one_device_and_compile_once():
    one, two = run_with_devices(1), run_with_devices(2)
    assert one["forced"] and two["forced"]
    assert (one["devices"], two["devices"]) == (1, 2)
    assert (one["output_devices"], two["output_devices"]) == (1, 2)  # the seed axis really was split
    assert one["recompiles"] == 0 and two["recompiles"] == 0  # the second call reuses the executable
    assert two["return_sum"] == one["return_sum"]  # same seeds, same episodes, whatever the split
    np.testing.assert_allclose(two["policy_loss"], one["policy_loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two["train_seeds_return"], one["train_seeds_return"], rtol=1e-5)
    # chunked: each device runs its seeds one after another (lax.map) instead of vmapped. The float sums run in
    # another order, and PPO's sampled actions amplify that over training, so the first updates are compared.
    for run in (one, two):
        assert run["chunked_recompiles"] == 0 and run["chunked_output_devices"] == run["devices"]
        np.testing.assert_allclose(np.asarray(run["chunked_policy_loss"])[:, :4], np.asarray(one["policy_loss"])[:, :4],
                                   rtol=1e-3, atol=1e-6)


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
