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


_HOOK_META = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
print(json.dumps([m.model_dump(mode="json") for m in HookMetaService.hook_meta_data()]))
"""


@pytest.mark.airflow
def test_the_ui_builds_both_connection_forms_on_this_airflow_version():
    """
    What the UI's connection page reads: 3.2+ from ``conn-fields``, 3.1 from the hooks' form methods.

    Runs in a fresh interpreter as the API server does, so no provider state of this session leaks in.
    """
    result = subprocess.run(
        [sys.executable, "-c", _HOOK_META], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-2000:]
    forms = {meta["connection_type"]: meta for meta in json.loads(result.stdout.splitlines()[-1])}
    for declared in airflow_provider_m2m.get_provider_info()["connection-types"]:
        form = forms[declared["connection-type"]]
        behaviour = declared["ui-field-behaviour"]
        for field, title in behaviour["relabeling"].items():
            assert form["standard_fields"][field]["title"] == title
            assert form["standard_fields"][field]["placeholder"] == behaviour["placeholders"][field]
        assert form["standard_fields"]["port"]["hidden"] is True
        extras = form["extra_fields"]
        assert set(extras) == set(declared["conn-fields"])
        for name, field in declared["conn-fields"].items():
            assert extras[name]["schema"]["title"] == field["label"]
            assert extras[name]["description"] == field["description"]
            declared_types = field["schema"]["type"]
            if "boolean" in declared_types:  # a checkbox on every version
                assert "boolean" in extras[name]["schema"]["type"]


_PLUGINS = """
import json
from airflow import plugins_manager as pm
if hasattr(pm, "_get_plugins"):  # Airflow 3.2+
    plugins, errors = pm._get_plugins()
    apps = pm.get_fastapi_plugins()[0]
else:  # Airflow 3.1: module-level lists, filled as the api-server fills them
    pm.initialize_fastapi_plugins()
    plugins, errors, apps = pm.plugins, pm.import_errors, pm.fastapi_apps
urls = [app["url_prefix"] for app in apps]
print(json.dumps({"plugins": [p.name for p in plugins], "errors": errors, "apps": urls}))
"""


@pytest.mark.airflow
@pytest.mark.parametrize("lazy", ["True", "False"])
def test_the_push_receiver_plugin_loads_exactly_once(lazy):
    """
    The api-server's plugins, as a fresh api-server loads them: Airflow's default lazy provider discovery
    (the ``airflow.plugins`` entry point alone) and eager discovery (which also loads provider-info plugins:
    listed there too, the receiver would be registered twice, the second reported as an import error).
    """
    (ep,) = [ep for ep in entry_points(group="airflow.plugins") if ep.dist.name == "airflow-provider-m2m"]
    assert ep.value == "airflow_provider_m2m.plugins.sim_insight_push:SimInsightPushPlugin"
    env = {**os.environ, "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy}
    result = subprocess.run([sys.executable, "-c", _PLUGINS], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded["plugins"].count("sim_insight_push") == 1, loaded
    assert loaded["apps"].count("/sim-insight") == 1, loaded
    assert not [error for error in loaded["errors"].values() if "sim_insight_push" in error], loaded["errors"]
