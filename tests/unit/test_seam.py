"""The asyncio seam is one place: only mailbridge/aio/ imports asyncio-world libraries."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "trio_asyncio", "aioimaplib", "asyncpg"}
SEAM = REPO / "mailbridge" / "aio"
# the seam's own unit tests drive aioimaplib's protocol directly
EXEMPT_TESTS = REPO / "tests" / "unit" / "aio"


def forbidden_imports(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names = [arg.value]
        for name in names:
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{path.relative_to(root)}:{node.lineno} imports {name}")
    return found


def project_files() -> list[Path]:
    files = []
    for top in ("mailbridge", "actors", "web", "tests", "bench"):
        for path in (REPO / top).rglob("*.py"):
            if SEAM in path.parents or EXEMPT_TESTS in path.parents:
                continue
            files.append(path)
    return files


def test_only_the_seam_imports_asyncio_libraries():
    offenders = [hit for path in project_files() for hit in forbidden_imports(path)]
    assert offenders == []


def test_the_checker_catches_each_form(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom asyncpg import connect\nimport aioimaplib.aioimaplib as x\n"
                   "__import__('trio_asyncio')\nfrom . import asyncio_thing\nimport trio\n")
    found = forbidden_imports(bad, root=tmp_path)
    assert [f.split(" imports ")[1] for f in found] == [
        "asyncio", "asyncpg", "aioimaplib.aioimaplib", "trio_asyncio"]
