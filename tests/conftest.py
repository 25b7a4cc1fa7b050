from __future__ import annotations

import pytest

from harness.cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A three-server cluster shared by the tests of one module (tests use distinct names)."""
    with LocalCluster(str(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path):
    """A three-server cluster of its own, for tests that break things."""
    with LocalCluster(str(tmp_path)) as c:
        yield c
