"""
The release files, as a user gets them: build the wheel and the sdist, check them, install the wheel alone.

``make test-package`` runs this (it is not part of ``make test``: a clean venv with Airflow takes a minute or
two, dependencies coming from pip's cache). The clean venv gets the built wheel and what it depends on, and
none of this checkout: Airflow must find the provider through the wheel's entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import airflow_provider_m2m

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.airflow
def test_a_clean_venv_with_the_wheel_lists_the_provider_and_both_connection_types(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    # The same Airflow as this test venv, so the install resolves from pip's cache instead of the index.
    airflow = f"apache-airflow=={version('apache-airflow')}"
    _run(str(python), "-m", "pip", "install", "--quiet", str(wheel), airflow, timeout=1200)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    airflow_cli = str(venv / "bin" / "airflow")
    where = _run(str(python), "-c", "import airflow_provider_m2m; print(airflow_provider_m2m.__file__)", cwd=tmp_path)
    assert where.strip().startswith(str(venv)), where  # the wheel's copy, not this checkout
    providers = json.loads(_run(airflow_cli, "providers", "list", "--output", "json", cwd=tmp_path, env=env))
    (ours,) = [p for p in providers if p["package_name"] == "airflow-provider-m2m"]
    assert ours["version"] == airflow_provider_m2m.__version__
    hooks = json.loads(_run(airflow_cli, "providers", "hooks", "--output", "json", cwd=tmp_path, env=env))
    types = {h["connection_type"]: h["class"] for h in hooks}
    assert types["m2m"] == "airflow_provider_m2m.hooks.m2m.M2mHook"
    assert types["daraja"] == "airflow_provider_m2m.hooks.daraja.DarajaHook"
