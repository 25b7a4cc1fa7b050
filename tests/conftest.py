from __future__ import annotations

import pytest

from lab.cluster import LocalCluster
from lab.peering import STREAM_ARGS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A three-server cluster shared by the tests of one module (tests use distinct names)."""
    with LocalCluster(str(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture(scope="module")
def dc1(tmp_path_factory: pytest.TempPathFactory):
    """Two clusters to peer (dc1 accepts, dc2 dials), fast peer-stream timings; shared by the
    tests of one module."""
    with LocalCluster(str(tmp_path_factory.mktemp("dc1")), datacenter="dc1",
                      extra_args=STREAM_ARGS) as c:
        yield c


@pytest.fixture(scope="module")
def dc2(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(str(tmp_path_factory.mktemp("dc2")), datacenter="dc2",
                      extra_args=STREAM_ARGS) as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path):
    """A three-server cluster of its own, for tests that break things."""
    with LocalCluster(str(tmp_path)) as c:
        yield c


SCENARIO_LINES: list[str] = []
FUZZ_LINES: list[str] = []  # tests/test_fuzz.py: requests sent, statuses seen, failures


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-kills", type=int, default=10,
                     help="leader SIGKILLs in the repeated-failover scenario (CI: 10; try 50)")
    parser.addoption("--chaos-long", action="store_true", default=False,
                     help="tests/test_chaos_mixed.py's long form: 50 leader kills, 20 "
                     "partitions, 3 server replacements (6 membership changes), 2 disk-full "
                     "episodes (CI runs the short form)")
    parser.addoption("--chaos-history", default=None,
                     help="directory for the mixed chaos run's JSONL history (default: the "
                     "test's tmp dir)")
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="the long fuzz run (>= 10,000 requests; also PEERPLANE_FUZZ_LONG=1)")


def pytest_terminal_summary(terminalreporter) -> None:
    """Chaos scenarios print one summary line each, whatever pytest's capture settings."""
    if SCENARIO_LINES:
        terminalreporter.section("chaos scenarios")
        for line in SCENARIO_LINES:
            terminalreporter.write_line(line)
    if FUZZ_LINES:
        terminalreporter.section("fuzz")
        for line in FUZZ_LINES:
            terminalreporter.write_line(line)
