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


SCENARIO_LINES: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-kills", type=int, default=10,
                     help="leader SIGKILLs in the repeated-failover scenario (CI: 10; try 50)")


def pytest_terminal_summary(terminalreporter) -> None:
    """Chaos scenarios print one summary line each, whatever pytest's capture settings."""
    if SCENARIO_LINES:
        terminalreporter.section("chaos scenarios")
        for line in SCENARIO_LINES:
            terminalreporter.write_line(line)
