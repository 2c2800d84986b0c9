"""The package layout's contract (DESIGN.md), read from the source with ``ast``.

- no module imports a private module (or a private name) of another package;
  each package's ``__init__`` is its only door;
- dependencies point down the DESIGN table: ``store`` imports neither Ray nor
  JAX, ``empirical`` imports none of ``build``, ``store``, ``config``, the CLI;
- the CLI uses public names only;
- no module is over 400 lines.

Imports inside functions count (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "bigntk"
MAX_MODULE_LINES = 400

# package -> the bigntk packages (and shared modules) it may import; DESIGN.md's table
ALLOWED = {
    "empirical": {"errors", "_text"},
    "stax": {"errors", "_text"},
    "taylor": {"empirical", "errors"},
    "store": {"errors", "_text"},
    "build": {"empirical", "store", "errors", "_text", "_ray"},
    "config": {"build", "stax", "store", "empirical", "errors", "_text"},
    "solve": {"store", "errors", "_text", "_ray"},
    "cli": {
        "cli",
        "_cli",
        "build",
        "config",
        "store",
        "solve",
        "empirical",
        "stax",
        "errors",
        "_text",
    },
    "errors": set(),
    "_text": set(),
    "_ray": set(),
}
ALLOWED["_cli"] = ALLOWED["__main__"] = ALLOWED["cli"]
# third-party libraries a package must never import, even lazily
FORBIDDEN = {"store": {"ray", "jax", "jaxlib"}, "empirical": {"ray", "zarr", "dask"}}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    """``bigntk.build._driver`` -> ``build``; ``bigntk.cli`` -> ``cli``; ``bigntk`` -> ``''``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` per import; ``name`` is None for ``import module``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module, alias.name) for alias in node.names]
    return out


def _targets(module: str, name: str | None) -> list[str]:
    """The bigntk modules an import statement loads (a from-import may name a submodule)."""
    if name is not None and f"{module}.{name}" in MODULES:
        return [f"{module}.{name}"]
    return [module] if module in MODULES else []


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split(".")[2:])


def violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        package = _package(module)
        if not package:
            continue
        where = f"{path.relative_to(ROOT.parent)}"
        for line, imported, name in _imports(path):
            top = imported.split(".")[0]
            if top in FORBIDDEN.get(package, ()):
                found.append(f"{where}:{line}: {package} imports {imported}")
            for target in _targets(imported, name):
                other = _package(target)
                if not other or other == package:
                    continue
                if other not in ALLOWED.get(package, set()):
                    found.append(f"{where}:{line}: {package} may not import {target}")
                elif _is_private(target):
                    found.append(f"{where}:{line}: imports the private module {target}")
                elif name is not None and name.startswith("_") and target == imported:
                    found.append(f"{where}:{line}: imports the private name {imported}.{name}")
    return found


def test_no_package_reaches_into_another_or_up_the_table():
    found = violations()
    assert not found, "import contract broken:\n" + "\n".join(dict.fromkeys(found))


def test_the_rules_catch_what_they_are_meant_to_catch(tmp_path):
    """The checker itself: each kind of violation is reported (so the test above can fail)."""
    assert _is_private("bigntk.build._driver") and not _is_private("bigntk.build")
    assert _package("bigntk.store._reader") == "store" and _package("bigntk.cli") == "cli"
    assert _targets("bigntk.build", "_driver") == ["bigntk.build._driver"]
    assert _targets("bigntk.build", "build_kernel") == ["bigntk.build"]
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom bigntk.build._driver import plan_layout\n")
    assert [(m, n) for _, m, n in _imports(bad)] == [
        ("ray", None),
        ("bigntk.build._driver", "plan_layout"),
    ]


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them): {long}"


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("bigntk", ("ray", "zarr", "dask", "scipy", "xarray")),
        ("bigntk.empirical", ("ray", "zarr", "dask", "bigntk.build", "bigntk.store")),
        # a build's worker process: Dask (and the xarray and pandas it imports) is the
        # reader's, ~1 s of every worker's start
        ("bigntk.build._worker", ("dask", "xarray", "pandas")),
        ("bigntk.solve", ("dask", "xarray", "pandas")),  # and the solver's actors
    ],
)
def test_import_loads_only_what_it_uses(module, absent):
    """``import bigntk`` loads JAX and the kernel functions, not the builder's libraries; a
    build's worker does not load the reader's."""
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"


def test_the_module_map_lists_every_module():
    """docs/modules.md names every module (one line each), so it cannot silently go stale."""
    text = (ROOT.parent / "docs" / "modules.md").read_text()
    missing = [
        str(p.relative_to(ROOT.parent))
        for p in MODULES.values()
        if f"`{p.relative_to(ROOT.parent)}`" not in text
    ]
    assert not missing, f"add a line for each to docs/modules.md: {missing}"


# the modules whose functions review named as hard to follow (issue 15)
SHORT_FUNCTIONS = (
    "bigntk/build/_driver.py",
    "bigntk/build/_scheduler.py",
    "bigntk/empirical/_planning/_planner.py",
    "bigntk/empirical/_chunking.py",
    "bigntk/empirical/_ntk_vector_products.py",
)


def test_functions_named_in_review_stay_short():
    """build_kernel, run_blocks, the scheduler, AUTO's planner, example chunking, the
    vector-products NTK: no function body over 60 lines (docstrings aside)."""
    long = []
    for name in SHORT_FUNCTIONS:
        for node in ast.walk(ast.parse((ROOT.parent / name).read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                documented = isinstance(body[0], ast.Expr) and isinstance(
                    body[0].value, ast.Constant
                )
                start = body[1].lineno if documented and len(body) > 1 else body[0].lineno
                if node.end_lineno - start + 1 > 60:
                    long.append(f"{name}: {node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, f"split these into named steps: {long}"
