"""Walks up the call stack from a running generator's frame to the sandbox's own module globals (``os`` there)."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import jax.numpy as jnp


def drift(ratio, advantage, progress):
    box = []

    def frames():
        frame = box[0].gi_frame
        while frame is not None:
            yield frame
            frame = frame.f_back

    box.append(frames())
    for frame in box[0]:
        if "os" in frame.f_globals:
            frame.f_globals["os"].system("touch /tmp/sandbox-escape-frames.txt")
    return jnp.abs(ratio - 1.0)
