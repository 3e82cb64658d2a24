"""
SMS runs: :class:`SmsRun` (one task group: validate, send under the never-twice ledger, wait for delivery,
report), and the parts it is made of: concurrent sending, the ledger, the delivery wait, the run's files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and the API docs; at run time the import is lazy, see __getattr__
    from airflow_provider_m2m.sms.run import SmsRun

__all__ = ["SmsRun"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): SmsRun is built from SendSmsOperator and SmsDeliverySensor, whose modules import
    # sms.ledger, sms.sending and sms.delivery; importing sms.run here eagerly would make every import of those
    # submodules import the operators first, a circular import.
    if name == "SmsRun":
        from airflow_provider_m2m.sms.run import SmsRun

        return SmsRun
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
