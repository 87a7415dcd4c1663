"""The sizes of the suite's smoke runs, shared by the tests that should compile the same kernels.

``scientist run --template T --profile smoke`` in the tests uses SMOKE_SIZES[T] = (seeds, budget) where given,
else the smoke profile's own. A kernel test that evaluates at these sizes compiles the very program the smoke runs
compile, so the suite's persistent compilation cache serves it to whichever comes second.
"""

SMOKE_SIZES = {"lpo": (2, 8192), "dpo": (2, 16), "marl": (2, 8192)}


def smoke_size(template) -> tuple[int, int]:
    """(seeds, budget) of the template's smoke runs in the tests."""
    prof = template.profile("smoke")
    return SMOKE_SIZES.get(template.name, (prof.seeds, prof.budget))
