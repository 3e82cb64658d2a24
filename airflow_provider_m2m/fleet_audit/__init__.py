"""
The nightly fleet IMEI audit: which SIMs moved to another device since the last audit.

Public: :class:`~airflow_provider_m2m.fleet_audit.task_group.FleetImeiAudit`, the audit as one task group. The
modules beside it hold its rules (``rules``, ``night``, ``sizing``: pure) and its files (``plan``, ``state``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_m2m.fleet_audit.task_group import FleetImeiAudit

__all__ = ["FleetImeiAudit"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the pure modules (rules, night, sizing) stay importable without Airflow.
    if name == "FleetImeiAudit":
        from airflow_provider_m2m.fleet_audit.task_group import FleetImeiAudit

        return FleetImeiAudit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
