"""Rules of the code base that a reviewer would otherwise have to remember (issue 15).

- No module of runtime/ or infra/ over 400 lines unless its docstring says why, in a paragraph
  starting "Longer than 400 lines".
- No getattr/hasattr on collaborators in runtime/: seams are typed Protocols. The exceptions are
  the places where the object is not ours to type, listed here with the reason.
- No late `bind`: construction order (or `start(executor)`) provides collaborators.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
MAX_LINES = 400
SOURCES = sorted(
    path
    for package in ("runtime", "infra")
    for path in (ROOT / package).rglob("*.py")
    if "__pycache__" not in path.parts
)
# getattr/hasattr allowed here only: (module, the attribute it reads), each with why.
DYNAMIC_LOOKUPS = {
    # A user's handler, named by a setting as "module.function": looked up by name by design.
    ("runtime/origin/apigw", "name"),
}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_a_long_module_says_why(path: Path) -> None:
    text = path.read_text()
    if text.count("\n") <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "Longer than 400 lines" in docstring, (
        f"{_relative(path)} has {text.count(chr(10))} lines: split it by job, or say why not in "
        'its docstring ("Longer than 400 lines because ...")'
    )


def _lookups(tree: ast.AST) -> list[tuple[str, str, int]]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
        ):
            name = node.args[1]
            shown = name.value if isinstance(name, ast.Constant) else ast.unparse(name)
            found.append((node.func.id, str(shown), node.lineno))
    return found


def test_no_getattr_or_hasattr_on_collaborators() -> None:
    offenders = []
    for path in SOURCES:
        if not _relative(path).startswith("runtime/"):
            continue
        module = _relative(path).removesuffix(".py").removesuffix("/__init__")
        for function, attribute, line in _lookups(ast.parse(path.read_text())):
            allowed = any(
                module.startswith(prefix) and attribute == name for prefix, name in DYNAMIC_LOOKUPS
            )
            if not allowed:
                offenders.append(f"{_relative(path)}:{line}: {function}(..., {attribute})")
    assert not offenders, "type the seam with a Protocol instead:\n" + "\n".join(offenders)


def test_no_late_binding_of_collaborators() -> None:
    binds = [
        f"{_relative(path)}:{node.lineno}"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "bind"
    ]
    assert not binds, "pass the collaborator at construction or to start():\n" + "\n".join(binds)


def test_the_contributing_map_names_files_that_exist() -> None:
    """CONTRIBUTING.md's table sends a newcomer to files: each must exist. A bare file name in a
    row is in the directory of the path named before it in that row."""
    missing = []
    rows = [line for line in (ROOT / "CONTRIBUTING.md").read_text().splitlines() if line[:1] == "|"]
    for line in rows:
        directory = ""
        for token in re.findall(r"`([\w./-]+)`", line):
            if "/" in token and token.split("/", 1)[0] in ("runtime", "infra", "tests", "docs"):
                if not (ROOT / token).exists():
                    missing.append(token)
                directory = token if token.endswith("/") else token.rsplit("/", 1)[0] + "/"
            elif token.endswith(".py") and directory and not (ROOT / directory / token).exists():
                missing.append(directory + token)
    assert not missing, f"CONTRIBUTING.md names files that do not exist: {missing}"
