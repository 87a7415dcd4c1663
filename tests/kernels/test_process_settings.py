"""Process-wide settings the kernel package makes on import (jaxlib_kernels/__init__.py).

A threaded OpenBLAS hangs when another thread of the process forks during one of its calls
(OpenMathLib/OpenBLAS#5520); a run forks while it computes (Ray, its lifeline and sandbox children start from a
background thread) and JAX's CPU factorisations call SciPy's OpenBLAS. Without the package's setting the script
below hung at its first factorisation on this machine; with it, it finishes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 600  # only against a hang (the failure this test exists for): the script takes seconds
SCRIPT = """
import os, subprocess, threading
import jaxlib_kernels  # first, as every process of the project imports it before its kernels run
import jax, jax.numpy as jnp

x = jax.random.normal(jax.random.PRNGKey(0), (8, 128, 128))
stop = threading.Event()

def fork_and_exec():  # what Ray's start does: fork, run a pre-exec hook, exec
    while not stop.is_set():
        subprocess.run(["true"], preexec_fn=lambda: None)

threading.Thread(target=fork_and_exec, daemon=True).start()
for i in range(100):
    jnp.linalg.qr(x * (i + 1))[0].block_until_ready()
stop.set()
print("done", os.environ["OPENBLAS_NUM_THREADS"])
"""


def test_factorisations_while_another_thread_forks_do_not_hang():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    assert out.returncode == 0 and out.stdout.split() == ["done", "1"], out.stderr[-3000:]


def test_a_thread_count_the_user_set_is_kept():
    out = subprocess.run([sys.executable, "-c", "import jaxlib_kernels, os; print(os.environ['OPENBLAS_NUM_THREADS'])"],
                         cwd=ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "4"}, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "4"
