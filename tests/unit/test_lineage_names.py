"""Lineage names of the platform: scheme, host and port of the connection, nothing a secret could hide in."""

from __future__ import annotations

import pytest

from airflow_provider_m2m.utils.lineage import platform_namespace


@pytest.mark.parametrize(
    ("base_url", "namespace"),
    [
        ("https://api.m2miportal.com", "https://api.m2miportal.com"),
        ("https://user:s3cret@api.m2miportal.com:8443/xml/api?token=abc#x", "https://api.m2miportal.com:8443"),
        ("http://127.0.0.1:39805", "http://127.0.0.1:39805"),
        ("https://API.Safaricom.co.ke/", "https://api.safaricom.co.ke"),
    ],
)
def test_platform_namespace_keeps_scheme_host_and_port_only(base_url, namespace):
    assert platform_namespace(base_url) == namespace
