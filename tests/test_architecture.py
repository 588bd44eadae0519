"""The shape of the house, read from the source with ast (nothing is imported): imports go down
from the face to the core, backends implement the core's ports, serving never reaches offline
tools, services meet only through contracts, clients and shared modules, and nothing cycles."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "kernels")
SERVICES = ("embedding", "experience", "earlyexit", "multilabel", "critique")
#: Shared rooms below every service: gRPC plumbing, plain utilities, adapters to external runtimes.
SHARED = ("services.runtime", "services.common", "services.adapters")
#: Entry points that start serving or offline work as processes; they may reach anything.
COMMANDS = ("services.cli", "services.supervisor", "services.catalog")
#: A service's public surface for other services and its own tools.
PUBLIC = ("client", "bundle")
#: Modules of a service that make up its face: the servicer and the protobuf mapping it shares with its client.
FACE = ("server", "convert", "client")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    imports: frozenset[str]  # every import, at module level or inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            package_parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            imports: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imports.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = package_parts[: len(package_parts) - node.level + 1]
                        base = ".".join([*anchor, *([node.module] if node.module else [])])
                    imports.add(base)
                    imports.update(f"{base}.{alias.name}" for alias in node.names)
            modules[name] = Module(name, path, frozenset(imports))
    return modules


MODULES = read_modules()


def resolve(imported: str) -> str | None:
    """The project module an import names (the longest prefix that is one), or None."""
    parts = imported.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def edges(module: Module) -> set[str]:
    """Project modules ``module`` imports (a package's ``__init__`` when it names only the package)."""
    return {target for name in module.imports if (target := resolve(name)) and target != module.name}


def service_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" and parts[1] in SERVICES else None


def is_offline(name: str) -> bool:
    return "offline" in name.split(".")


def layer(name: str) -> str | None:
    """core, backends or face, for a module inside a service."""
    parts = name.split(".")
    if service_of(name) is None or len(parts) < 3:
        return None
    if parts[2] in ("core", "backends"):
        return parts[2]
    return "face" if parts[2] in FACE else None


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations() -> list[str]:
    found: list[str] = []
    for module in MODULES.values():
        name, own = module.name, service_of(module.name)
        for target in sorted(edges(module)):
            where = f"{name} imports {target}"
            if layer(name) == "core":
                if service_of(target) == own and layer(target) in ("face", "backends"):
                    found.append(f"{where}: a core imports its {layer(target)}")
            if layer(name) == "backends" and service_of(target) == own and layer(target) == "face":
                found.append(f"{where}: a backend imports the face")
            if is_offline(target) and not is_offline(name) and not under(name, COMMANDS):
                found.append(f"{where}: a serving module imports an offline tool")
            other = service_of(target)
            if own and other and other != own and target.split(".")[2] not in PUBLIC:
                found.append(f"{where}: a service imports another service's internals")
            if under(name, SHARED) and other and target.split(".")[2] not in PUBLIC:
                found.append(f"{where}: a shared module imports a service's internals")
            if name.startswith("kernels") and target.startswith("services"):
                found.append(f"{where}: kernels import a service")
        if layer(name) == "core":
            for imported in sorted(module.imports):
                top = imported.split(".")[0]
                if top == "grpc" or top == "rosemesh" or imported.startswith("google.protobuf"):
                    found.append(f"{name} imports {imported}: a core imports gRPC or protobuf")
                if under(imported, ("services.runtime",)):
                    found.append(f"{name} imports {imported}: a core imports the gRPC runtime")
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: edges(module) for name, module in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_walk_sees_the_whole_house() -> None:
    """Guards the checks below against passing on an empty or misread tree."""
    assert {service_of(name) for name in MODULES} >= set(SERVICES)
    assert "services.runtime.server" in edges(MODULES["services.embedding.server"])
    assert any(is_offline(name) for name in MODULES)


def test_imports_go_one_way() -> None:
    assert violations() == []


def test_no_import_cycles() -> None:
    assert cycles() == []


def test_every_service_has_the_three_rooms() -> None:
    for service in SERVICES:
        assert f"services.{service}.server" in MODULES, service
        assert f"services.{service}.core.ports" in MODULES, service
        assert f"services.{service}.backends" in MODULES, service


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        ("services.embedding.core.embedder", "services.embedding.server", "a core imports its face"),
        ("services.embedding.backends.onnx", "services.embedding.server", "a backend imports the face"),
        ("services.embedding.server", "services.embedding.offline.export", "imports an offline tool"),
        ("services.experience.server", "services.embedding.core.embedder", "another service's internals"),
    ],
)
def test_the_rules_catch_what_they_name(
    importer: str, imported: str, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = MODULES[importer]
    monkeypatch.setitem(MODULES, importer, Module(importer, module.path, module.imports | {imported}))
    assert any(rule in v for v in violations())


def test_the_cycle_check_catches_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    module = MODULES["services.common.errors"]
    monkeypatch.setitem(
        MODULES, module.name, Module(module.name, module.path, module.imports | {"services.common.batching"})
    )
    assert ["services.common.batching", "services.common.errors"] in cycles()
