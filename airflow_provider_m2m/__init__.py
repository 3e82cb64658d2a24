"""Apache Airflow provider for IoT SIM fleets: SIM Insight M2M and Safaricom Daraja."""

from __future__ import annotations

__version__ = "0.1.0"

_M2M_FIELDS = {
    "api_id": {
        "label": "API ID",
        "description": "The API ID of your SIM Insight account (letters and digits, e.g. 123456); sent with every "
        "request.",
        "schema": {"type": "string", "pattern": "^[0-9A-Za-z]+$"},
    },
    "timeout": {
        "label": "Timeout (s)",
        "description": "Seconds to wait for the platform before a request counts as timed out (default 30).",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
    },
    "verify": {
        "label": "Verify TLS",
        "description": "Verify the platform's TLS certificate (default true). Only turn off for a test endpoint.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "max_requests_per_second": {
        "label": "Max requests per second",
        "description": "At most this many requests per second from one task, all its concurrent calls together; "
        "set it a little under the platform's limit. Empty: no limit.",
        "schema": {"type": ["number", "null"], "minimum": 0},
    },
    "test_iccid": {
        "label": "Test ICCID",
        "description": "An ICCID of your fleet that \"Test connection\" queries (SIM Insight has no ping). Empty: a "
        "placeholder ICCID, whose \"invalid iccid\" answer still proves the credentials were accepted.",
        "schema": {"type": ["string", "null"]},
    },
}


def get_provider_info() -> dict:
    """Describe this provider to Airflow: the single registry of its hooks, operators and connection types."""
    return {
        "package-name": "airflow-provider-m2m",
        "name": "M2M SIM fleets (SIM Insight, Safaricom Daraja)",
        "description": "Audit and message IoT SIM fleets: SIM Insight M2M IMEI-change queries and SMS, "
        "and Safaricom Daraja IMSI / SIM-swap checks.",
        "integrations": [
            {
                "integration-name": "SIM Insight M2M",
                "external-doc-url": "https://docs.m2miportal.com/",
                "tags": ["service"],
            },
            {
                "integration-name": "Safaricom Daraja",
                "external-doc-url": "https://developer.safaricom.co.ke/",
                "tags": ["service"],
            },
        ],
        "hooks": [
            {"integration-name": "SIM Insight M2M", "python-modules": ["airflow_provider_m2m.hooks.m2m"]},
            {"integration-name": "Safaricom Daraja", "python-modules": ["airflow_provider_m2m.hooks.daraja"]},
        ],
        "operators": [
            {
                "integration-name": "SIM Insight M2M",
                "python-modules": [
                    "airflow_provider_m2m.operators.m2m",
                    "airflow_provider_m2m.operators.sim_status",
                    "airflow_provider_m2m.operators.approval",
                ],
            },
            {
                "integration-name": "Safaricom Daraja",
                "python-modules": ["airflow_provider_m2m.operators.daraja"],
            },
        ],
        "sensors": [
            {"integration-name": "SIM Insight M2M", "python-modules": ["airflow_provider_m2m.sensors.m2m"]},
        ],
        "triggers": [
            {"integration-name": "SIM Insight M2M", "python-modules": ["airflow_provider_m2m.triggers.m2m"]},
        ],
        "connection-types": [
            {
                "connection-type": "m2m",
                "hook-class-name": "airflow_provider_m2m.hooks.m2m.M2mHook",
                "hook-name": "SIM Insight M2M",
                "ui-field-behaviour": {
                    "hidden-fields": ["port", "schema"],
                    "relabeling": {"host": "Base URL", "login": "API username", "password": "API password"},
                    "placeholders": {
                        "host": "https://api.m2miportal.com",
                        "login": "SIM Insight API username",
                        "password": "SIM Insight API password",
                    },
                },
                "conn-fields": _M2M_FIELDS,
            },
            {
                "connection-type": "daraja",
                "hook-class-name": "airflow_provider_m2m.hooks.daraja.DarajaHook",
                "hook-name": "Safaricom Daraja",
                "ui-field-behaviour": {
                    "hidden-fields": ["port", "schema"],
                    "relabeling": {"host": "Base URL", "login": "Consumer key", "password": "Consumer secret"},
                    "placeholders": {
                        "host": "https://sandbox.safaricom.co.ke or https://api.safaricom.co.ke",
                        "login": "Daraja app consumer key",
                        "password": "Daraja app consumer secret",
                    },
                },
                "conn-fields": {
                    "timeout": _M2M_FIELDS["timeout"],
                    "max_requests_per_second": _M2M_FIELDS["max_requests_per_second"],
                },
            },
        ],
    }
