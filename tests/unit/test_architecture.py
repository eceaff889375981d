"""The dependency rules of DESIGN §1: the folders are the architecture, and one layer writes."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("statemachine", "eventstore", "projections", "service")
ALLOWED = {
    "statemachine": set(),
    "eventstore": set(),
    "projections": {"statemachine", "eventstore"},
    "service": {"statemachine", "eventstore", "projections"},
}

WRITERS = ("service/application/",)
"""The only code that may append events."""
WRITE_EXCEPTIONS = ("service/tools/bench/eventstore_suites.py",)
"""Benchmarks of the event store itself append raw events on purpose."""

FORBIDDEN = {
    "service/application/": ("service.entrypoints", "service.tools"),
    "service/adapters/": ("service.application", "service.entrypoints", "service.tools"),
    "service/entrypoints/api/": ("service.adapters.openai_gateway", "service.entrypoints.runtime"),
    "service/entrypoints/console/": (
        "service.adapters.openai_gateway",
        "service.entrypoints.runtime",
    ),
}
"""Inside service/: what each folder must not import."""
CONSOLE = "service.entrypoints.console"
CONSOLE_ALLOWED_FROM = ("service/entrypoints/api/app.py",)
"""Besides the console itself, only the API's app imports it: it mounts it at /admin/."""
TOOLS_ALLOWED_FROM = ("service/entrypoints/cli.py",)
"""Besides the tools themselves, only the CLI imports service/tools/: it dispatches to them."""
KERNEL_FORBIDDEN = (
    "service.application",
    "service.adapters",
    "service.entrypoints",
    "service.tools",
)
"""The shared modules at service/'s top (config, logs, ids, ...) belong to no layer."""


def _imports(tree: ast.AST, module: str = "") -> Iterator[str]:
    """Every module (and `module.name`) imported; relative imports resolved from `module`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, *([base] if base else [])])
            if base:
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names)


def imported_packages(source: str) -> set[str]:
    """Our top-level packages that a module's source imports (absolute imports only)."""
    return {name.split(".")[0] for name in _imports(ast.parse(source))} & set(PACKAGES)


def _modules(root: Path) -> Iterator[tuple[str, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            yield path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _dotted(rel: str) -> str:
    """The module a file defines (`service/x/__init__.py` -> `service.x.__init__`, whose
    relative imports resolve like a module inside the package)."""
    return rel.removesuffix(".py").replace("/", ".")


def violations(root: Path) -> list[str]:
    """Every import that crosses the package rule, as `file imports package`."""
    found = []
    for rel, tree in _modules(root):
        package = rel.split("/")[0]
        names = {name.split(".")[0] for name in _imports(tree, _dotted(rel))} & set(PACKAGES)
        for target in sorted(names - {package} - ALLOWED[package]):
            found.append(f"{rel} imports {target}")
    return found


_WRITE_TOOLS = ("StreamAppend", "Unit")
"""What builds or commits appends: only the application layer may touch these names."""
_RAW_INSERT = re.compile(r"\bINSERT\s+INTO\s+events\b|\beventstore_append\b", re.IGNORECASE)


def _appends(tree: ast.AST, module: str) -> Iterator[str]:
    for name in _imports(tree, module):
        if name.rsplit(".", 1)[-1] in _WRITE_TOOLS:
            yield f"imports {name.rsplit('.', 1)[-1]}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _WRITE_TOOLS:
            yield f"uses {ast.unparse(node)}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            if node.func.attr == "append_many" or (
                node.func.attr == "append" and "store" in receiver.split(".")[-1].lower()
            ):
                yield f"calls {receiver}.{node.func.attr}"
            elif node.func.attr == "execute" and "ledger" in receiver.lower():
                yield f"calls {receiver}.execute"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "getattr" and any(
                isinstance(a, ast.Constant) and a.value in ("append", "append_many")
                for a in node.args
            ):
                yield "calls an append through getattr"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _RAW_INSERT.search(node.value)
        ):
            yield "writes to the events table in SQL"


def writers_outside_the_application_layer(root: Path) -> list[str]:
    """Every module outside the application layer that appends events, and how."""
    found = []
    for rel, tree in _modules(root):
        if rel.startswith(WRITERS) or rel in WRITE_EXCEPTIONS or rel.startswith("eventstore/"):
            continue
        found += [f"{rel} {what}" for what in dict.fromkeys(_appends(tree, _dotted(rel)))]
    return found


def layer_violations(root: Path) -> list[str]:
    """Imports inside service/ that cross its layers, as `file imports module`."""
    found = []
    for rel, tree in _modules(root):
        if not rel.startswith("service/"):
            continue
        kernel = rel.count("/") == 1
        banned = [b for folder, bs in FORBIDDEN.items() if rel.startswith(folder) for b in bs]
        if kernel:
            banned += KERNEL_FORBIDDEN
        if not rel.startswith("service/tools/") and rel not in TOOLS_ALLOWED_FROM:
            banned.append("service.tools")
        if not rel.startswith("service/entrypoints/console/") and rel not in CONSOLE_ALLOWED_FROM:
            banned.append(CONSOLE)
        for name in set(_imports(tree, _dotted(rel))):
            if any(name == b or name.startswith(f"{b}.") for b in banned):
                found.append(f"{rel} imports {name}")
    # `from a.b import c` yields a.b and a.b.c: report the shortest name that crossed.
    return sorted(f for f in found if not any(f.startswith(f"{g}.") for g in found))


def test_packages_import_only_in_the_allowed_direction() -> None:
    assert violations(ROOT) == []


def test_only_the_application_layer_appends_events() -> None:
    assert writers_outside_the_application_layer(ROOT) == []


def test_service_folders_import_only_in_the_allowed_direction() -> None:
    assert layer_violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    for rel, source in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "eventstore/bad.py": "from statemachine.events import X\n",
            "projections/worse.py": "def f():\n    import service.tools\n",
            "service/fine.py": "import eventstore, projections\n",
        },
    )
    assert violations(root) == [
        "eventstore/bad.py imports statemachine",
        "projections/worse.py imports service",
    ]


def test_the_check_catches_an_append_outside_the_application_layer(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "service/entrypoints/api/handlers.py": (
                "async def h(d):\n    await d.store.append('request-1', 0, [])\n"
            ),
            "service/entrypoints/intake.py": "from eventstore import StreamAppend\n",
            "service/tools/synthetic.py": "async def f(s, a):\n    await s.append_many(a)\n",
            "projections/rows.py": "def f(rows, r):\n    rows.append(r)\n",
            "service/entrypoints/jobs.py": (
                "import eventstore\n"
                "async def f(log, d):\n"
                "    a = eventstore.StreamAppend('x', 0, [])\n"
                "    await getattr(d, 'append_many')([a])\n"
            ),
            "service/entrypoints/serve.py": (
                "from ..application.ledger import Unit\n"
                "async def f(rt):\n    await rt.app.ledger.execute(1, 2, 3, 4)\n"
            ),
            "service/adapters/database.py": "Q = 'insert into events (position) values (1)'\n",
            "service/application/ledger.py": (
                "from eventstore import StreamAppend\n"
                "async def c(self, a):\n    await self.store.append_many(a)\n"
            ),
        },
    )
    assert writers_outside_the_application_layer(root) == [
        "service/adapters/database.py writes to the events table in SQL",
        "service/entrypoints/api/handlers.py calls d.store.append",
        "service/entrypoints/intake.py imports StreamAppend",
        "service/entrypoints/jobs.py uses eventstore.StreamAppend",
        "service/entrypoints/jobs.py calls an append through getattr",
        "service/entrypoints/serve.py imports Unit",
        "service/entrypoints/serve.py calls rt.app.ledger.execute",
        "service/tools/synthetic.py calls s.append_many",
    ]


def test_the_check_catches_imports_across_service_layers(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "service/entrypoints/api/handlers.py": (
                "from service.adapters.openai_gateway import TransientError\n"
                "from service.entrypoints.runtime import Runtime\n"
            ),
            "service/adapters/tokens.py": "from service.entrypoints.api.deps import Deps\n",
            "service/application/batching.py": "import service.tools.emulator\n",
            "service/config.py": "from service.application.ledger import Actor\n",
            "service/entrypoints/cli.py": "from service.tools.demo import demo\n",
            "service/entrypoints/serve.py": "from service.application.app import Application\n",
            "service/entrypoints/api/deps.py": "from ..runtime import Runtime\n",
            "service/entrypoints/api/app.py": "from service.entrypoints.console import app\n",
            "service/entrypoints/jobs.py": "from service.entrypoints.console.core import x\n",
            "service/entrypoints/console/pages.py": "from service.entrypoints.runtime import R\n",
        },
    )
    assert layer_violations(root) == [
        "service/adapters/tokens.py imports service.entrypoints.api.deps",
        "service/application/batching.py imports service.tools.emulator",
        "service/config.py imports service.application.ledger",
        "service/entrypoints/api/deps.py imports service.entrypoints.runtime",
        "service/entrypoints/api/handlers.py imports service.adapters.openai_gateway",
        "service/entrypoints/api/handlers.py imports service.entrypoints.runtime",
        "service/entrypoints/console/pages.py imports service.entrypoints.runtime",
        "service/entrypoints/jobs.py imports service.entrypoints.console.core",
    ]
