"""
The release files, as a user gets them: build the wheel and the sdist, check them, install the wheel alone.

``make test-package`` runs this (it is not part of ``make test``: a clean venv with Airflow takes a minute or
two, dependencies coming from pip's cache). The clean venv gets the built wheel and what it depends on, and
none of this checkout: Airflow must find the provider through the wheel's entry point, and what pip installs
for the wheel must be what the package imports (:data:`COMES_WITH_AIRFLOW` lists what it imports undeclared).
It installs the Airflow of the venv running the tests, so ``make test-package AIRFLOW_VERSION=3.1.8`` checks
the wheel on Airflow 3.1.8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import airflow_provider_m2m

ROOT = Path(__file__).resolve().parents[2]
LICENCE_FILES = ("LICENSE", "NOTICE")
# Third-party modules the package imports without declaring them, and why each is Airflow's to bring.
COMES_WITH_AIRFLOW = {
    # The push receiver (plugins/sim_insight_push.py) is an app mounted in Airflow's API server: it runs on the
    # FastAPI and Starlette that apache-airflow-core requires and pins; a range of our own could only conflict.
    "fastapi": "apache-airflow-core",
    "starlette": "apache-airflow-core",
    # push/events.py queries Airflow's metadata DB through Airflow's ORM session.
    "sqlalchemy": "apache-airflow-core",
    # utils/version_compat.py reads Airflow's version as Airflow itself does.
    "packaging": "apache-airflow-core",
    # Airflow 3.1's UI only: the hooks' connection-form classmethods import them when 3.1 asks for the form
    # widgets, and 3.1 stands in for them when they are not installed (they come with the FAB provider).
    "flask_appbuilder": None,
    "flask_babel": None,
    "wtforms": None,
}
# What only the `openlineage` extra brings: utils/lineage.py, run when the OpenLineage provider asks. (It also
# imports common.compat's OpenLineage facets, but common.compat is a dependency of its own: `conf` comes from it.)
OPENLINEAGE_EXTRA = {"airflow.providers.openlineage", "openlineage"}


def _run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900) -> str:
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"{args}: {(result.stdout + result.stderr)[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist() -> Path:
    """The wheel and the sdist, built from this checkout with ``python -m build``."""
    out = Path(tempfile.mkdtemp(prefix="m2m-dist-"))
    _run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT))
    return out


def test_wheel_and_sdist_pass_twine_check(dist):
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    out = _run(sys.executable, "-m", "twine", "check", "--strict", *map(str, files))
    assert out.count("PASSED") == 2, out


def test_wheel_holds_the_package_and_its_marker_and_no_tests(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"airflow_provider_m2m-{airflow_provider_m2m.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "airflow_provider_m2m/py.typed" in names
    assert "airflow_provider_m2m/__init__.py" in names
    assert "airflow_provider_m2m/hooks/m2m.py" in names
    assert not [n for n in names if n.startswith(("tests/", "dags/", "benchmarks/")) or "/tests/" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    metadata = zipfile.ZipFile(wheel).read(
        f"airflow_provider_m2m-{airflow_provider_m2m.__version__}.dist-info/METADATA"
    ).decode()
    assert f"Version: {airflow_provider_m2m.__version__}" in metadata
    assert "Requires-Dist: apache-airflow>=3.1" in metadata
    for extra in ("openlineage", "test", "ui"):
        assert f"Provides-Extra: {extra}" in metadata


def test_the_installed_version_is_the_one_in_the_package():
    assert version("airflow-provider-m2m") == airflow_provider_m2m.__version__


@pytest.fixture(scope="module")
def clean_venv(dist, tmp_path_factory) -> Path:
    """A new venv with the built wheel and this venv's Airflow (pinned as ``make`` pins it), nothing else."""
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path_factory.mktemp("clean") / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    # The same Airflow as this test venv, so the install resolves from pip's cache instead of the index.
    airflow_version = version("apache-airflow")
    pins = ROOT / "constraints" / f"airflow-{airflow_version}.txt"
    constraints = ["-c", str(pins)] if pins.exists() else []
    install = ["install", "--quiet", str(wheel), f"apache-airflow=={airflow_version}", *constraints]
    _run(str(python), "-m", "pip", *install, timeout=1200)
    return venv


def test_the_licence_is_in_the_repository_the_wheel_and_the_sdist(dist):
    licence = (ROOT / "LICENSE").read_text()
    # The whole Apache License 2.0 (section 4(a): recipients get a copy), not a pointer to it.
    assert licence.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in licence
    assert "9. Accepting Warranty or Additional Liability." in licence and "END OF TERMS AND CONDITIONS" in licence
    notice = (ROOT / "NOTICE").read_text()
    assert notice.startswith("airflow-provider-m2m\n") and "Apache License, Version 2.0" in notice
    version_ = airflow_provider_m2m.__version__
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = f"airflow_provider_m2m-{version_}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        for name in LICENCE_FILES:
            assert archive.read(f"{info}/licenses/{name}").decode() == (ROOT / name).read_text(), name
            assert f"License-File: {name}" in metadata
    assert "License-Expression: Apache-2.0" in metadata
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        top = f"airflow_provider_m2m-{version_}"
        for name in LICENCE_FILES:
            member = archive.extractfile(f"{top}/{name}")
            assert member is not None and member.read().decode() == (ROOT / name).read_text(), name
        pkg_info = archive.extractfile(f"{top}/PKG-INFO").read().decode()
    assert all(f"License-File: {name}" in pkg_info for name in LICENCE_FILES)


def test_the_metadata_names_the_project_and_its_contact(dist):
    (wheel,) = dist.glob("*.whl")
    metadata = zipfile.ZipFile(wheel).read(
        f"airflow_provider_m2m-{airflow_provider_m2m.__version__}.dist-info/METADATA"
    ).decode()
    assert "Keywords: " in metadata and "Classifier: Development Status :: " in metadata
    assert "Author-email: " in metadata
    urls = {line.split(": ", 1)[1].split(",")[0] for line in metadata.splitlines() if line.startswith("Project-URL")}
    assert {"Documentation", "Source", "Issues", "Changelog"} <= urls
    assert "Requires-Dist: apache-airflow-providers-standard>=1.12.2" in metadata
    assert "apache-airflow-providers-http" not in metadata  # the hooks own their transport


@pytest.mark.airflow
def test_the_wheel_pulls_exactly_what_the_package_imports(clean_venv, tmp_path):
    python = str(clean_venv / "bin" / "python")
    assert "No broken requirements found" in _run(python, "-m", "pip", "check", cwd=tmp_path)
    script = Path(__file__).with_name("imports_of_package.py")
    report = json.loads(_run(python, str(script), cwd=tmp_path))
    requirements = [Requirement(text) for text in report["requires"]]
    always = [req for req in requirements if req.marker is None or req.marker.evaluate({"extra": ""})]
    declared = {canonicalize_name(req.name) for req in always}
    # Every dependency is installed at a version it allows.
    for req in always:
        installed = report["installed"][canonicalize_name(req.name)]
        assert installed is not None and req.specifier.contains(installed, prereleases=True), (str(req), installed)
    imports = report["imports"]
    needed = {module: entry for module, entry in imports.items() if not entry["optional"]}
    # Every import the package runs is declared, or comes with Airflow for the reason COMES_WITH_AIRFLOW gives.
    undeclared = {
        module: entry["files"][:3]
        for module, entry in needed.items()
        if module not in COMES_WITH_AIRFLOW and not set(entry["dists"]) & declared
    }
    assert not undeclared, f"imported, not declared: {undeclared}"
    # Every dependency is imported (an unused one is weight on every install, and a promise nobody keeps).
    imported = {dist for entry in needed.values() for dist in entry["dists"]}
    assert declared <= imported, f"declared, never imported: {sorted(declared - imported)}"
    # What comes with Airflow is there without being asked for, and the list holds nothing stale.
    assert set(COMES_WITH_AIRFLOW) <= set(needed), sorted(set(COMES_WITH_AIRFLOW) - set(needed))
    for module, brought_by in COMES_WITH_AIRFLOW.items():
        if brought_by is not None:
            assert needed[module]["dists"], f"{module}: not installed with {brought_by}"
    # The optional imports are exactly the OpenLineage ones, which the `openlineage` extra brings.
    assert {module for module, entry in imports.items() if entry["optional"]} == OPENLINEAGE_EXTRA
    with_lineage = [req for req in requirements if req.marker and req.marker.evaluate({"extra": "openlineage"})]
    assert "apache-airflow-providers-openlineage" in {canonicalize_name(req.name) for req in with_lineage}


@pytest.mark.airflow
def test_a_clean_venv_with_the_wheel_lists_the_provider_and_both_connection_types(clean_venv, tmp_path):
    python = clean_venv / "bin" / "python"
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    airflow_cli = str(clean_venv / "bin" / "airflow")
    where = _run(str(python), "-c", "import airflow_provider_m2m; print(airflow_provider_m2m.__file__)", cwd=tmp_path)
    assert where.strip().startswith(str(clean_venv)), where  # the wheel's copy, not this checkout
    providers = json.loads(_run(airflow_cli, "providers", "list", "--output", "json", cwd=tmp_path, env=env))
    (ours,) = [p for p in providers if p["package_name"] == "airflow-provider-m2m"]
    assert ours["version"] == airflow_provider_m2m.__version__
    hooks = json.loads(_run(airflow_cli, "providers", "hooks", "--output", "json", cwd=tmp_path, env=env))
    types = {h["connection_type"]: h["class"] for h in hooks}
    assert types["m2m"] == "airflow_provider_m2m.hooks.m2m.M2mHook"
    assert types["daraja"] == "airflow_provider_m2m.hooks.daraja.DarajaHook"
