"""The packages are layers: each imports only from the ones below it, and nothing from above.

searchspace (bottom) <- scaling, results <- nas. A cycle (the catalog once imported scaling to
derive B1..B3 while scaling imported the catalog) or a reach upward shows up here first.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests import REPO

#: What each package may import from the project's own packages.
ALLOWED = {
    "searchspace": {"searchspace"},
    "scaling": {"searchspace", "scaling"},
    "results": {"searchspace", "results"},
    "nas": {"searchspace", "scaling", "results", "nas"},
}


def _imports(package: str) -> dict[str, set[str]]:
    """Module path -> the project packages it imports (anywhere in the module, lazily too)."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names & set(ALLOWED)
    return found


@pytest.mark.parametrize("package", list(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    reaching_up = {
        module: sorted(names - ALLOWED[package])
        for module, names in _imports(package).items()
        if names - ALLOWED[package]
    }
    assert reaching_up == {}


def test_results_never_imports_torch():
    # Reports and dashboards run where no GPU stack is installed, and start in a blink.
    for path in sorted((REPO / "results").rglob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert "torch" not in imported, path


def test_configs_and_the_command_line_load_without_torch_or_ray():
    # Bad input is answered before anything heavy loads.
    code = (
        "import sys; import nas.cli, nas.search.config, nas.train.config, nas.evaluate.config; "
        "import searchspace, scaling; nas.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
