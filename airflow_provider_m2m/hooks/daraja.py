"""Hook for Safaricom Daraja (OAuth2 client credentials, IMSI / SIM-swap check)."""

from __future__ import annotations

from airflow_provider_m2m.hooks.base import PlatformHook
from airflow_provider_m2m.transport import RetryPolicy


class DarajaHook(PlatformHook):
    """
    Talk to Safaricom Daraja's IMSI / SIM-swap check.

    :param daraja_conn_id: the Airflow connection id (conn type ``daraja``).
    :param retry_policy: how transient failures are retried.
    """

    conn_name_attr = "daraja_conn_id"
    default_conn_name = "daraja_default"
    conn_type = "daraja"
    hook_name = "Safaricom Daraja"

    def __init__(self, daraja_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(daraja_conn_id, retry_policy=retry_policy)
        self.daraja_conn_id = daraja_conn_id
