"""The layout holds what docs/architecture.md draws: no package imports one its row does not name (a lower
layer never reaches a higher one), no module shares a name with a folder beside it, and no function in
fpi/ runs over 60 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "fpi"
LONGEST_FUNCTION = 60
TOP = "fpi"  # fpi/__init__.py and fpi/__main__.py: the public API over every package


def allowed_imports(doc: Path = ROOT / "docs" / "architecture.md") -> dict[str, set[str]]:
    """The packages table of docs/architecture.md: each package and the packages it may import."""
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", doc.read_text(encoding="utf-8"), flags=re.M)
    return {package: set(re.findall(r"`(\w+)`", may)) for package, may in rows}


def package_of(module: str) -> str:
    """`fpi.io.sniff` -> `io`; `fpi` itself and `fpi.__main__` -> TOP."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else TOP


def imports_of(path: Path) -> set[str]:
    """Every fpi module a file imports, wherever the import stands (in a function, under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "fpi"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fpi":
            found |= {f"{node.module}.{alias.name}" if node.module == "fpi" else node.module for alias in node.names}
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module name -> the fpi modules it imports, for every module under `root`."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        graph[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = imports_of(path)
    return graph


def violations(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    """`importer -> imported` for each import of a package its row does not allow."""
    found = []
    for module, imported in sorted(graph.items()):
        here = package_of(module)
        if here == TOP:
            continue
        for target in sorted(imported):
            there = package_of(target)
            if there != here and there not in allowed.get(here, set()):
                found.append(f"{module} -> {target}")
    return found


def test_the_doc_draws_every_package():
    allowed = allowed_imports()
    packages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()} | {"testing"}
    assert set(allowed) == packages
    assert all(may <= set(allowed) for may in allowed.values())


def test_no_package_imports_one_it_may_not():
    assert violations(import_graph(), allowed_imports()) == []


@pytest.mark.parametrize(("importer", "imported"), [("fpi.contract.records", "fpi.io.sniff"),
                                                    ("fpi.io.traces", "fpi.pipeline.features"),
                                                    ("fpi.pipeline.classify", "fpi.engines.plan"),
                                                    ("fpi.reports.gate", "fpi.pipeline.model"),
                                                    ("fpi.presentation.plots", "fpi.cli.common")])
def test_a_lower_package_importing_a_higher_one_is_caught(importer, imported):
    graph = {"fpi.contract.errors": set(), "fpi.io.sniff": {"fpi.contract.errors"}, importer: {imported}}
    assert violations(graph, allowed_imports()) == [f"{importer} -> {imported}"]
    assert violations({importer: set()}, allowed_imports()) == []


def test_imports_are_read_wherever_they_stand(tmp_path):
    module = tmp_path / "fpi" / "io" / "reader.py"
    module.parent.mkdir(parents=True)
    module.write_text("from typing import TYPE_CHECKING\nimport fpi.contract.errors\nif TYPE_CHECKING:\n"
                      "    from fpi.pipeline.model import FailurePointModel\ndef f():\n    from fpi import engines\n")
    assert imports_of(module) == {"fpi.contract.errors", "fpi.pipeline.model", "fpi.engines"}
    assert violations(import_graph(tmp_path / "fpi"), allowed_imports()) == ["fpi.io.reader -> fpi.engines",
                                                                            "fpi.io.reader -> fpi.pipeline.model"]


def test_no_module_shares_a_name_with_a_folder_beside_it_or_its_own():
    clashes = [str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")
               if path.with_suffix("").is_dir() or path.stem == path.parent.name]
    assert clashes == []


def long_functions(root: Path = PACKAGE, longest: int = LONGEST_FUNCTION) -> list[str]:
    """`file:line name (lines)` for each function or method longer than `longest` lines, nested ones included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > longest:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines})")
    return found


def test_no_function_in_fpi_runs_over_60_lines():
    assert long_functions() == []


def test_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST_FUNCTION))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path) == [f"m.py:5 long ({LONGEST_FUNCTION + 1})"]
