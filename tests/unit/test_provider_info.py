"""The provider registers itself the way Airflow discovers providers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest

import airflow_provider_m2m


def test_provider_info_validates_against_airflow_runtime_schema():
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(airflow_provider_m2m.get_provider_info(), schema)


def test_connection_types_validate_against_the_strict_provider_yaml_schema():
    """The declarative UI fields follow the stricter dev schema too (hidden fields enum, conn-fields shape)."""
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider.yaml.schema.json").read_text())
    item_schema = schema["properties"]["connection-types"]
    jsonschema.validate(airflow_provider_m2m.get_provider_info()["connection-types"], item_schema)


def test_entry_point_and_package_name_match_the_distribution():
    (ep,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist.name == "airflow-provider-m2m"]
    info = ep.load()()
    assert info["package-name"] == ep.dist.name == "airflow-provider-m2m"


@pytest.mark.parametrize(
    ("conn_type", "attrs", "labels"),
    [
        (
            "m2m",
            ("m2m_conn_id", "m2m_default", "SIM Insight M2M"),
            {"login": "API username", "password": "API password"},
        ),
        (
            "daraja",
            ("daraja_conn_id", "daraja_default", "Safaricom Daraja"),
            {"login": "Consumer key", "password": "Consumer secret"},
        ),
    ],
)
def test_each_connection_type_points_at_an_importable_hook(conn_type, attrs, labels):
    (entry,) = [
        c for c in airflow_provider_m2m.get_provider_info()["connection-types"] if c["connection-type"] == conn_type
    ]
    module, _, name = entry["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    assert (hook.conn_name_attr, hook.default_conn_name, hook.hook_name) == attrs
    assert hook.conn_type == conn_type
    assert entry["hook-name"] == hook.hook_name
    relabels = entry["ui-field-behaviour"]["relabeling"]
    assert {k: relabels[k] for k in labels} == labels
    assert "port" in entry["ui-field-behaviour"]["hidden-fields"]


def test_m2m_form_declares_api_id_timeout_verify_test_iccid():
    (m2m,) = [c for c in airflow_provider_m2m.get_provider_info()["connection-types"] if c["connection-type"] == "m2m"]
    assert {"api_id", "timeout", "verify", "test_iccid"} <= set(m2m["conn-fields"])
    assert m2m["conn-fields"]["test_iccid"]["schema"]["type"] == ["string", "null"]  # optional
    assert m2m["ui-field-behaviour"]["placeholders"]["host"] == "https://api.m2miportal.com"


def _airflow_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args, "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.airflow
def test_airflow_cli_lists_the_provider_and_both_connection_types():
    providers = json.loads(_airflow_cli("providers", "list"))
    assert "airflow-provider-m2m" in {p["package_name"] for p in providers}
    hooks = json.loads(_airflow_cli("providers", "hooks"))
    types = {h["connection_type"]: h for h in hooks}
    assert types["m2m"]["class"] == "airflow_provider_m2m.hooks.m2m.M2mHook"
    assert types["daraja"]["class"] == "airflow_provider_m2m.hooks.daraja.DarajaHook"


def test_s3_extra_brings_the_s3fs_filesystem():
    """`s3://` URIs need ObjectStoragePath's s3 filesystem: `pip install 'airflow-provider-m2m[s3]'` brings it."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    (requirement,) = [Requirement(r) for r in project["optional-dependencies"]["s3"]]
    assert (requirement.name, requirement.extras) == ("apache-airflow-providers-amazon", {"s3fs"})
