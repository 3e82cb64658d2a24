"""
What differs between the Airflow versions this provider supports (3.1, 3.2, 3.3), in one place.

Each name is the newest Airflow's own where it exists; each fallback says why it is safe. The README's
"Supported Airflow versions" section lists what a user sees differ on each version.
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow.sdk.log import mask_secret

try:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
except ImportError:  # Airflow 3.1: the task exceptions live in airflow.exceptions (deprecated there from 3.2)
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.1: timetables are not in the task SDK yet
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[no-redef,assignment]

# The configuration as Airflow's provider checks ask providers to import it (never airflow.configuration):
# common-compat picks the task SDK's where it exists and falls back on Airflow 3.1.
from airflow.providers.common.compat.sdk import conf

try:
    from airflow.sdk.log import amask_secret
except ImportError:  # before Airflow 3.3 there is no async variant, and the sync one is documented safe in a coroutine

    async def amask_secret(secret: Any, name: str | None = None) -> None:  # type: ignore[misc]  # 3.3's takes more
        """Register ``secret`` with the secret masker from a coroutine (a trigger)."""
        mask_secret(secret, name)


def _airflow_version() -> tuple[int, int]:
    from airflow import __version__
    from packaging.version import Version

    release = Version(__version__).release
    return release[0], release[1]


#: Airflow 3.3 or newer (the pattern official providers use for version gates).
AIRFLOW_V_3_3_PLUS = _airflow_version() >= (3, 3)

try:  # the task state store (Airflow 3.3+) comes with its retention constants
    from airflow.sdk.execution_time.context import NEVER_EXPIRE  # noqa: F401

    HAS_TASK_STATE_STORE = True
except ImportError:  # Airflow 3.1 / 3.2: no task state store; the SMS ledger settles retries from the SMS history
    HAS_TASK_STATE_STORE = False


class TaskLog(Protocol):
    """
    The logger the package's helpers write to: a task's, sensor's or trigger's ``self.log`` (a structlog logger
    whose class is private to Airflow and lives in another module for triggers and on each version), or a
    :class:`logging.Logger`. The helpers log %-style lines only.
    """

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "CronDataIntervalTimetable",
    "AIRFLOW_V_3_3_PLUS",
    "HAS_TASK_STATE_STORE",
    "amask_secret",
    "conf",
    "mask_secret",
]
