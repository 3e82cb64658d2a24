"""
Where the Daraja access token lives: one record per Daraja app, shared by every worker of a deployment.

Daraja's Authorization FAQ: "Can I generate multiple tokens? Yes, but each request invalidates the previous
token." A token cached per process is therefore knocked out by the next process that fetches one. The one thing
all workers of a deployment share is the metadata DB, so the token lives there, in an Airflow Variable per app:

* key ``daraja_access_token_<sha256(base URL, consumer key, secret)[:16]>``: the consumer key is not shown, and a
  key containing ``access_token`` is one of Airflow's sensitive names, so the UI and the REST API show the
  value masked; the JSON value's own ``access_token`` field is masked by the same rule. Variables are encrypted
  at rest with the deployment's Fernet key, where Airflow encrypts.
* value: JSON ``{"access_token", "expires_at" (epoch s), "lifetime" (s), "renewing": {"holder", "until"} | null}``.

Inside a task the Variable is read and written through the Task SDK (``airflow.sdk.Variable``: the execution API,
so it works on Celery or Kubernetes workers without DB access); outside a task (a script, a notebook) through
``airflow.models.Variable`` (the metadata DB directly); with no metadata DB at all, in this process only, said
once in the log. Every token read from the store is registered with the secret masker by the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

KEY_PREFIX = "daraja_access_token_"
DESCRIPTION = "The Daraja access token every worker shares (airflow-provider-m2m); renewed by the hook"

# Records kept in this process when there is no metadata DB (a script without Airflow set up).
_LOCAL: dict[str, str] = {}
_LOCAL_LOCK = threading.Lock()
_KNOWN_KEYS: set[str] = set()  # every key this process used, for forget_all()
_warned_local = False
_db_ready = False  # once the metadata DB answered, it is used for the rest of the process


def variable_key(base_url: str, consumer_key: str, consumer_secret: str) -> str:
    """
    The Variable key of one Daraja app: a digest, so the consumer key is not shown in the Variables list. The
    secret is part of it: a connection with a wrong secret never borrows the token of the right one (it fails
    when it asks Daraja, as it should), and a rotated secret starts a record of its own.
    """
    material = f"{base_url}\n{consumer_key}\n{consumer_secret}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{digest}"


def _in_task() -> bool:
    """True inside a running task (the Task SDK's channel to its supervisor is set)."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def _forget_sdk_cache(key: str) -> None:
    # With [secrets] use_cache on, the Task SDK would answer a read from its cache for minutes: a peer's
    # renewal would go unseen, and this worker would renew again. Always read the store itself.
    try:
        from airflow.sdk.execution_time.cache import SecretCache

        SecretCache.invalidate_variable(key)
    except Exception:  # an older SDK without the cache: nothing to forget
        pass


def _has_db() -> bool:
    """Whether this process reaches a metadata DB with a variable table (asked until it does, then trusted)."""
    global _db_ready
    if not _db_ready:
        try:
            from airflow.models import Variable
            from airflow.utils.session import create_session
            from sqlalchemy import select

            with create_session() as session:
                session.execute(select(Variable.key).limit(1)).all()
            _db_ready = True
        except Exception as exc:  # not configured, not created, unreachable: all mean "none"
            _use_local(exc)
    return _db_ready


def _use_local(exc: Exception) -> None:
    global _warned_local
    if not _warned_local:
        _warned_local = True
        log.warning(
            "No Airflow metadata DB to share the Daraja access token (%s): it is kept in this process only, "
            "so another process using the same Daraja app invalidates it (Daraja keeps one live token per app)",
            type(exc).__name__,
        )


def read(key: str) -> dict[str, Any] | None:
    """The app's record, or None when there is none (or it is unreadable)."""
    _KNOWN_KEYS.add(key)
    text: Any = None
    if _in_task():
        from airflow.sdk import Variable

        _forget_sdk_cache(key)
        text = Variable.get(key, default=None)
    elif _has_db():
        from airflow.models import Variable as DbVariable

        text = DbVariable.get(key, default_var=None)
    else:
        with _LOCAL_LOCK:
            text = _LOCAL.get(key)
    if not text:
        return None
    try:
        record = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None  # not ours to understand (edited by hand?): renewed and overwritten
    return record if isinstance(record, dict) else None


def write(key: str, record: dict[str, Any]) -> None:
    """Store the app's record (a whole-value write: the last writer wins, see the hook's lease)."""
    _KNOWN_KEYS.add(key)
    text = json.dumps(record)
    if _in_task():
        from airflow.sdk import Variable

        Variable.set(key, text, description=DESCRIPTION)
    elif _has_db():
        from airflow.models import Variable as DbVariable

        DbVariable.set(key, text, description=DESCRIPTION)
    else:
        with _LOCAL_LOCK:
            _LOCAL[key] = text


def forget_all() -> None:
    """
    Delete the stored tokens (tests, or to make every worker fetch a new one); best effort. With the metadata DB
    at hand, every app's record goes, also those written by other processes; inside a task (no listing through
    the Task SDK), the records this process used.
    """
    with _LOCAL_LOCK:
        _LOCAL.clear()
    if not _in_task() and _has_db():
        from airflow.models import Variable as DbVariable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session() as session:
            session.execute(delete(DbVariable).where(DbVariable.key.startswith(KEY_PREFIX)))
        _KNOWN_KEYS.clear()
        return
    for key in list(_KNOWN_KEYS):
        try:
            if _in_task():
                from airflow.sdk import Variable

                Variable.delete(key)
            elif _has_db():
                from airflow.models import Variable as DbVariable

                DbVariable.delete(key)
        except Exception:  # nothing stored there, or no DB: nothing to forget
            pass
    _KNOWN_KEYS.clear()
