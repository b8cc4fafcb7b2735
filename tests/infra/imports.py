"""The project's own imports, read from source without running it, to check what a package
directory (the node's build context, the Lambda's zip) must hold. Every `import runtime...` in a
module counts, at module level or inside a function: a branch taken only at run time must find
its module too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "runtime"


@dataclass(frozen=True)
class Import:
    """One imported name. `from a import b` names `a` (a module) and `a.b`, which is a module
    only if a file says so; otherwise it must be something a's __init__.py binds."""

    name: str
    surely_module: bool


@dataclass
class ImportClosure:
    """The project modules reachable from some start modules, found in one directory."""

    found: dict[str, Path] = field(default_factory=dict)
    missing: set[tuple[str, str]] = field(default_factory=set)  # (importer, module)


def module_file(root: Path, module: str) -> Path | None:
    """The file under `root` that `module` (dotted) would load from, if there is one."""
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(module: str, path: Path) -> set[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imports: set[Import] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imports.update(Import(alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            imports.add(Import(base, True))
            imports.update(Import(f"{base}.{alias.name}", False) for alias in node.names)
    return {item for item in imports if item.name.split(".")[0] == PACKAGE}


def bound_names(path: Path) -> set[str]:
    """Names a module binds at its top level (definitions, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def import_closure(root: Path, start: list[str]) -> ImportClosure:
    """Follow the project's imports from `start` through the files under `root`."""
    closure = ImportClosure()
    pending = [("", Import(module, True)) for module in start]
    while pending:
        importer, item = pending.pop()
        if item.name in closure.found:
            continue
        path = module_file(root, item.name)
        if path is None:
            parent, _, attribute = item.name.rpartition(".")
            parent_path = module_file(root, parent)
            an_attribute = (
                not item.surely_module
                and parent_path is not None
                and (parent_path.name != "__init__.py" or attribute in bound_names(parent_path))
            )
            if not an_attribute:
                closure.missing.add((importer, item.name))
            continue
        closure.found[item.name] = path
        parts = item.name.split(".")
        parents = (".".join(parts[:end]) for end in range(1, len(parts)))
        pending += [(item.name, Import(parent, True)) for parent in parents]
        pending += [(item.name, found) for found in project_imports(item.name, path)]
    return closure


def python_modules(root: Path) -> dict[str, Path]:
    """Every .py file under `root`, by module name."""
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
