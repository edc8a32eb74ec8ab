"""The package's boundaries, read from the import statements of every module.

loyalty never imports sso (it knows sso only by the integration events and the gRPC contract);
platform imports neither service (it holds generic mechanisms); only the composition root, the
command line and the whole-process settings know both services.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import authloyalty

PACKAGE = Path(authloyalty.__file__).parent

# Importer package → the packages it must never import.
FORBIDDEN = {
    "authloyalty.loyalty": ("authloyalty.sso",),
    "authloyalty.sso": ("authloyalty.loyalty",),
    "authloyalty.platform": ("authloyalty.sso", "authloyalty.loyalty", "authloyalty.bootstrap",
                             "authloyalty.cli", "authloyalty.settings"),
    "authloyalty.events": ("authloyalty.sso", "authloyalty.loyalty"),
}


def module_name(path: Path, root: Path) -> str:
    """The dotted name of ``path`` in the package at ``root``."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (relative imports resolved), with its line."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from authloyalty import sso`` imports the package authloyalty.sso.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    """``file:line imports module`` for every forbidden import under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        for owner, forbidden in FORBIDDEN.items():
            if importer != owner and not importer.startswith(owner + "."):
                continue
            for line, target in imported(path, root):
                if any(target == f or target.startswith(f + ".") for f in forbidden):
                    found.append(f"{path.relative_to(root.parent)}:{line} imports {target}")
    return found


def test_no_module_crosses_a_boundary() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize("statement", [
    "from authloyalty.sso.domain import UserNotFound",
    "import authloyalty.sso.service",
    "from authloyalty import sso",
    "from ..sso import domain",
])
def test_a_forbidden_import_is_found(tmp_path: Path, statement: str) -> None:
    root = tmp_path / "authloyalty"
    (root / "loyalty").mkdir(parents=True)
    (root / "loyalty" / "__init__.py").write_text("")
    (root / "loyalty" / "leak.py").write_text(f"{statement}\n")
    [found] = violations(root)
    assert found.startswith("authloyalty/loyalty/leak.py:1 imports authloyalty.sso")
