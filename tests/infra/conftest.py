"""Fixtures of the infra tests (the machinery is in clusters.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[1] / "llm"))  # scripted_server, the LLM tests' model server
import clusters

ray_cluster = pytest.fixture(clusters.ray_cluster_fixture, scope="module")
prefect_server = pytest.fixture(clusters.prefect_server_fixture, scope="module")  # one server for the module
postgres_prefect_server = pytest.fixture(clusters.postgres_prefect_server_fixture, scope="module")
