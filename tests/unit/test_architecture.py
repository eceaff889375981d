"""The dependency rule of DESIGN §1: the folders are the architecture."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("statemachine", "eventstore", "projections", "service")
ALLOWED = {
    "statemachine": set(),
    "eventstore": set(),
    "projections": {"statemachine", "eventstore"},
    "service": {"statemachine", "eventstore", "projections"},
}


def imported_packages(source: str) -> set[str]:
    """Our top-level packages that a module's source imports (absolute imports only)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


def violations(root: Path) -> list[str]:
    """Every import that crosses the rule, as `file imports package`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for target in imported_packages(path.read_text(encoding="utf-8")) - {package}:
                if target not in ALLOWED[package]:
                    found.append(f"{path.relative_to(root)} imports {target}")
    return found


def test_packages_import_only_in_the_allowed_direction() -> None:
    assert violations(ROOT) == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "eventstore" / "bad.py").write_text("from statemachine.events import X\n")
    (tmp_path / "projections" / "worse.py").write_text("def f():\n    import service.tools\n")
    (tmp_path / "service" / "fine.py").write_text("import eventstore, projections\n")
    assert violations(tmp_path) == [
        "eventstore/bad.py imports statemachine",
        "projections/worse.py imports service",
    ]
