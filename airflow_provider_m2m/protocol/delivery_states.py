"""
Every word a delivery report uses for where an SMS stands, in one place: the states the platform's
``status`` maps to, and the two a delivery wait adds (not found in the SIM's history, not checked yet).
"""

from __future__ import annotations

#: Delivery states, from the platform's ``status`` of a mobile-terminated message. The documentation names
#: ``pending`` and ``delivered`` and leaves the list open ("pending, delivered, ..."): the other words
#: below are the usual SMSC outcomes. Any other status is ``unknown``: kept as sent, never taken as final.
DELIVERED, PENDING, FAILED, UNKNOWN = "delivered", "pending", "failed", "unknown"
_STATE_OF_STATUS = {
    "delivered": DELIVERED,
    **dict.fromkeys(("pending", "queued", "accepted", "submitted", "sent", "enroute", "buffered"), PENDING),
    **dict.fromkeys(
        ("failed", "undelivered", "undeliverable", "expired", "rejected", "cancelled", "canceled", "deleted"),
        FAILED,
    ),
}


def delivery_state(status: str | None) -> str:
    """The delivery state (:data:`DELIVERED`, :data:`PENDING`, :data:`FAILED`, :data:`UNKNOWN`) of a status."""
    return _STATE_OF_STATUS.get((status or "").strip().lower(), UNKNOWN)


#: The message is not among the SIM's last ``lastx`` messages (not registered yet, or never sent).
NOT_FOUND = "not_found"
#: No answer about the message yet (not asked yet, or every query so far failed).
UNCHECKED = "unchecked"
#: States that end the wait for a message.
FINAL_STATES = (DELIVERED, FAILED)
#: Every state a report row can carry, in the order tallies are shown.
STATES = (DELIVERED, FAILED, PENDING, UNKNOWN, NOT_FOUND, UNCHECKED)
