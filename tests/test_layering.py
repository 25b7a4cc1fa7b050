"""The layout's rules, checked on the source: every import points down (peerplane_cli -> api ->
cluster; lab beside cluster), the product never imports the tests, and nothing edits sys.path."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("peerplane_cli", "api", "cluster", "lab")
# What each package may import from the others (itself always).
ALLOWED = {
    "cluster": set(),
    "lab": {"cluster"},
    "api": {"cluster"},
    "peerplane_cli": {"api", "cluster", "lab"},
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_import_between_product_packages_points_down():
    wrong = [
        f"{path.relative_to(ROOT)} imports {other}"
        for package in PRODUCT
        for path in _modules(package)
        for other in _imported_packages(path) & (set(PRODUCT) | {"harness", "tests"})
        if other != package and other not in ALLOWED[package]
    ]
    assert wrong == []


def test_no_product_module_edits_sys_path():
    assert [
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in _modules(package)
        if "sys.path" in path.read_text()
    ] == []
