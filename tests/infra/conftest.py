"""Fixtures of the infra tests (the machinery is in clusters.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import clusters

ray_cluster = pytest.fixture(clusters.ray_cluster_fixture)
prefect_server = pytest.fixture(clusters.prefect_server_fixture, scope="module")  # one server for the module
postgres_prefect_server = pytest.fixture(clusters.postgres_prefect_server_fixture, scope="module")
