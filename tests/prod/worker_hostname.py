"""
``[core] hostname_callable`` of the production stack's Celery workers: the name each worker was given.

Both workers run on this one machine, so the fully qualified domain name Airflow records by default in a task
instance's ``hostname`` would be the same for both; on a real deployment they are two machines with two names.
The stack starts each worker with ``M2M_WORKER_HOSTNAME`` set to its Celery hostname and this module on its
``PYTHONPATH``, so a task instance says which worker ran it.
"""

from __future__ import annotations

import os


def worker_hostname() -> str:
    """The name of the worker this process belongs to."""
    return os.environ["M2M_WORKER_HOSTNAME"]
