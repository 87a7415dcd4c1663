"""Seeds split over local devices (jaxlib_kernels.devices): same results as one device, one compilation.

"Same" is exact only for what cannot depend on float rounding: the seeds and their order, the shapes of every
metric, the number of updates, the compilations. Everything computed in floats is compared with stated
tolerances over the first updates only: a split changes the batch layout of each device's program, so sums can
round differently in the last digits, and PPO amplifies such differences chaotically (once one sampled action
flips, the trajectories part; measured on a 2-core host, one seed vmapped alone instead of with three others
changed its policy loss by 2% at update 12 of 16, its episode counts from update 15 on, and its final return from
0.11 to 0.62). Later updates and final returns of a split and an unsplit run are therefore not compared.
"""

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
EARLY_UPDATES = 4  # of the 16 updates below: compared with float tolerances (the module docstring says why)

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
host = lambda out: {k: np.asarray(v).tolist() for k, v in out.items()}
print(json.dumps({
    "forced": forced,
    "devices": len(jax.devices()),
    "one_devices": len(one["metrics"]["return_sum"].sharding.device_set),
    "split_devices": len(split["metrics"]["return_sum"].sharding.device_set),
    "chunked_devices": len(chunked["metrics"]["return_sum"].sharding.device_set),
    "recompiles": counter.compiles,
    "chunked_recompiles": chunked_counter.compiles,
    "num_updates": config.num_updates,
    "one": host(one["metrics"]),
    "split": host(split["metrics"]),
    "chunked": host(chunked["metrics"]),
    "train_seeds": host(ppo.train_seeds(config, None, seeds)),  # what the lpo template's evaluate calls
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
    reference = {k: np.asarray(v) for k, v in run["one"].items()}
    shape = (4, run["num_updates"])  # (seeds, updates), seeds in the order given
    for name in ("one", "split", "chunked", "train_seeds"):
        assert set(run[name]) == set(reference), name
        for key, values in run[name].items():
            assert np.asarray(values).shape == shape, (name, key)
        assert np.all(np.asarray(run[name]["episodes"]) >= 0), name
    early = EARLY_UPDATES
    assert reference["episodes"][:, :early].sum() > 0  # episodes end early on, so the returns below are compared
    assert len({tuple(row) for row in reference["return_sum"][:, :early].tolist()}) == 4  # a permuted seed shows
    # split (2 devices x 2 seeds vmapped) and ppo.train_seeds, which splits the seeds itself in a process with 2
    # devices: the same computation per seed as the reference, up to float rounding in the first updates. The
    # episode counts there are integers that only an exact tie of two sampled logits could change.
    for name in ("split", "train_seeds"):
        got = {k: np.asarray(v) for k, v in run[name].items()}
        np.testing.assert_array_equal(got["episodes"][:, :early], reference["episodes"][:, :early], err_msg=name)
        np.testing.assert_allclose(got["return_sum"][:, :early], reference["return_sum"][:, :early],
                                   rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["policy_loss"][:, :early], reference["policy_loss"][:, :early],
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    # chunked: each device runs its seeds one after another (lax.map) instead of vmapped; the float sums run in
    # another order still, so its losses get a looser tolerance over the same first updates.
    np.testing.assert_allclose(np.asarray(run["chunked"]["policy_loss"])[:, :early],
                               reference["policy_loss"][:, :early], rtol=1e-3, atol=1e-6)


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
