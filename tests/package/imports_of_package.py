"""
What an installed ``airflow_provider_m2m`` imports and declares, as JSON on stdout (run by the clean venv's Python).

``make test-package`` runs this file with the Python of a venv that holds only the wheel and Airflow, never this
checkout: it reads the installed package's source, so it sees exactly what a user gets. Standard library only
(plus ``packaging``, which Airflow brings), since it runs outside the test venv.

Output: ``{"requires": [...], "installed": {dist: version}, "imports": {module: {"dists": [...], "optional": bool,
"files": [...]}}}``. A module is ``airflow.providers.<name>`` for a provider, else its top-level name. ``optional``:
every import of it sits in a function of ``utils/lineage.py`` (run by the OpenLineage provider only) or in a
``try`` that handles ImportError. Imports under ``if TYPE_CHECKING:`` are not run, so not counted.
"""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, requires, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PACKAGE = "airflow_provider_m2m"
DIST = "airflow-provider-m2m"
# Imported only when the OpenLineage provider asks the operators for their datasets.
LINEAGE_ONLY = "utils/lineage.py"


def _handles_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {t.id for t in types if isinstance(t, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports(tree: ast.AST, optional: bool = False):
    """(module, optional, line) for every absolute import run at some point; TYPE_CHECKING blocks skipped."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for child in node.orelse for i in _imports(ast.Module([child], []), optional))
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, optional, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, optional, node.lineno
        elif isinstance(node, ast.Try):
            for child in node.body:
                yield from _imports(ast.Module([child], []), optional or _handles_import_error(node))
            for handler in node.handlers:
                yield from _imports(handler, optional)
            for child in (*node.orelse, *node.finalbody):
                yield from _imports(ast.Module([child], []), optional)
        else:
            yield from _imports(node, optional)


def _module_key(name: str) -> str | None:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("__future__", PACKAGE):
        return None
    if name.startswith("airflow.providers."):  # a provider: airflow.providers.<name> or .common.<name>
        parts = name.split(".")
        return ".".join(parts[: 4 if parts[2] == "common" else 3])
    return top


def _dists_of(key: str, owners: dict[str, list[str]]) -> list[str]:
    if key.startswith("airflow.providers."):
        return ["apache-airflow-providers-" + "-".join(key.split(".")[2:]).replace("_", "-")]
    if key == "airflow":
        return ["apache-airflow"]
    return sorted({canonicalize_name(d) for d in owners.get(key, [])})


def main() -> None:
    root = Path(distribution(DIST).locate_file(PACKAGE))
    owners = packages_distributions()
    imports: dict[str, dict] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for name, optional, line in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            key = _module_key(name)
            if key is None:
                continue
            entry = imports.setdefault(key, {"dists": _dists_of(key, owners), "optional": True, "files": []})
            entry["optional"] = entry["optional"] and (optional or relative == LINEAGE_ONLY)
            entry["files"].append(f"{relative}:{line}")
    declared = requires(DIST) or []
    installed = {}
    for text in declared:
        name = canonicalize_name(Requirement(text).name)
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            installed[name] = None
    print(json.dumps({"requires": declared, "installed": installed, "imports": imports}))


if __name__ == "__main__":
    main()
