"""Pure JAX kernels of jax-scientist: environments, RL, ES and research templates.

Nothing here imports Prefect or Ray (ARCHITECTURE.md section 7).

Importing the package sets ``OPENBLAS_NUM_THREADS=1`` unless it is already set. JAX's CPU linear algebra (the QR
of Flax's orthogonal initialiser among it) calls SciPy's OpenBLAS, and a threaded OpenBLAS hangs for good when
another thread of the process forks during such a call: OpenBLAS's fork handler stops its thread pool and the call
then waits on workers that are gone (OpenMathLib/OpenBLAS#5520). Our processes fork while they compute: a run
starts Ray, its lifeline and sandbox children from a background thread. One such hang was seen here, a smoke run
stuck in ideation for 30 minutes. Reproduced with 8 QRs of 128 x 128 on the XLA thread pool while a thread ran
``subprocess.run(..., preexec_fn=...)`` in a loop: it hung at the first QR; with one OpenBLAS thread 300 such QRs
took 3.3 s (tests/kernels/test_process_settings.py). JAX parallelises over its own thread pool, so the kernels
lose nothing by it. The library reads the variable when it is loaded, which JAX does at the first factorisation,
after this import.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
