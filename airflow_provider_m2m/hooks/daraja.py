"""Hook for Safaricom Daraja (OAuth2 client credentials, IMSI / SIM-swap check)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from airflow.sdk.log import mask_secret

from airflow_provider_m2m.exceptions import AuthenticationError, M2mProviderError
from airflow_provider_m2m.hooks import connection_forms
from airflow_provider_m2m.hooks import daraja_token_store as token_store
from airflow_provider_m2m.hooks.base import PlatformHook
from airflow_provider_m2m.protocol import daraja
from airflow_provider_m2m.protocol import msisdn as msisdn_rules
from airflow_provider_m2m.protocol.daraja import SimSwapRecord
from airflow_provider_m2m.utils import batches
from airflow_provider_m2m.utils.transport import Reply, RetryPolicy

__all__ = ["DarajaHook", "SimSwapRecord", "clear_token_cache"]

R = TypeVar("R")

TOKEN_PATH = "/oauth/v1/generate"
CHECK_PATH = "/imsi/v1/checkATI"
# Renew a cached token when less than this much of its life remains (the smaller of the two).
RENEW_BEFORE_SECONDS = 60.0
RENEW_BEFORE_FRACTION = 0.1
# The renewal lease of the shared token (see DarajaHook._shared_token): a claim holds the other workers back
# this long at most (a holder that died frees the app then); a claimer reads its claim back after
# CLAIM_SETTLE_SECONDS; a worker waiting for a peer's renewal looks again every POLL_SECONDS.
LEASE_SECONDS = 30.0
CLAIM_SETTLE_SECONDS = 0.3
POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # epoch seconds (time.time()): the shared store compares it across processes and machines
    lifetime: float

    def fresh(self) -> bool:
        margin = min(RENEW_BEFORE_SECONDS, RENEW_BEFORE_FRACTION * self.lifetime)
        return self.expires_at - time.time() > margin

    def record(self) -> dict[str, Any]:
        return {"access_token": self.value, "expires_at": self.expires_at, "lifetime": self.lifetime, "renewing": None}


# In front of the shared store, each process keeps the token it last used per (base URL, consumer key, secret
# digest): read without the lock (a dict lookup is atomic), replaced under it, so many threads needing a
# token cause one look at the store.
_TOKENS: dict[tuple[str, str, str], _Token] = {}
_TOKEN_LOCK = threading.Lock()


def clear_token_cache() -> None:
    """
    Forget the access tokens: this process's, and the shared store's (every app's record where this process
    reaches the metadata DB; inside a task, the records it used). For tests, or to make every worker fetch a
    new token.
    """
    with _TOKEN_LOCK:
        _TOKENS.clear()
        token_store.forget_all()


class _TokenRejected(Exception):
    """Daraja refused the access token (HTTP 401 or an invalid-token error code); private."""

    def __init__(self, status: int, error_code: str | None) -> None:
        self.status = status
        self.error_code = error_code
        super().__init__(f"HTTP {status} {error_code or '-'}")


def _swap_error(number: str, error: str) -> SimSwapRecord:
    return SimSwapRecord(msisdn=number, error=error)


class DarajaHook(PlatformHook):
    """
    Talk to Safaricom Daraja's IMSI / SIM-swap check (``POST /imsi/v1/checkATI``).

    The connection's host is the environment's base URL (``https://sandbox.safaricom.co.ke`` or
    ``https://api.safaricom.co.ke``), login and password are the app's consumer key and secret, extras
    ``timeout`` (s), ``verify`` (TLS) and ``max_requests_per_second``. Daraja keeps one live access token per
    app (a new one invalidates the previous one), so the token is shared by every worker of the deployment
    through an Airflow Variable (:mod:`~airflow_provider_m2m.hooks.daraja_token_store`: masked in the UI,
    encrypted at rest where Airflow encrypts; in this process only when there is no metadata DB), renewed
    shortly before it expires or once for everyone when Daraja refuses it, and registered with the secret
    masker wherever it is read.
    Every check costs money on the real service: a batch never checks the same number twice.

    .. code-block:: python

        hook = DarajaHook(daraja_conn_id="daraja_default")
        record = hook.check_sim_swap("0722000000")
        for record in hook.check_sim_swaps(numbers, max_workers=8): ...

    :param daraja_conn_id: the Airflow connection id (conn type ``daraja``).
    :param retry_policy: how transient failures are retried
        (:class:`~airflow_provider_m2m.utils.transport.RetryPolicy`).
    """

    conn_name_attr = "daraja_conn_id"
    default_conn_name = "daraja_default"
    conn_type = "daraja"
    hook_name = "Safaricom Daraja"
    # Airflow 3.1's UI builds the form from these two; 3.2+ reads provider info and never calls them.
    get_connection_form_widgets = connection_forms.form_widgets
    get_ui_field_behaviour = connection_forms.field_behaviour

    def __init__(self, daraja_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(retry_policy=retry_policy)
        self.daraja_conn_id = daraja_conn_id

    # ------------------------------------------------------------------ token
    def _cache_key(self) -> tuple[str, str, str]:
        conn = self.connection
        digest = hashlib.sha256((conn.password or "").encode()).hexdigest()
        return self.base_url, conn.login or "", digest

    def _interpret_token(self, reply: Reply) -> tuple[str, float]:
        if reply.status in (400, 401, 403):
            # The real service answers bad credentials with HTTP 400 and an empty body.
            raise AuthenticationError(
                f"Connection {self.conn_id!r}: Daraja refused the consumer key/secret (HTTP {reply.status})"
            )
        if reply.status != 200:
            error = daraja.parse_error(reply.body, reply.status)
            raise AuthenticationError(f"Connection {self.conn_id!r}: no Daraja access token: {error}")
        return daraja.parse_token(reply.body)

    def _fetch_token(self) -> _Token:
        conn = self.connection
        token, lifetime = self.request(
            "GET",
            f"{self.base_url}{TOKEN_PATH}",
            self._interpret_token,
            what=f"Daraja token for connection {self.conn_id!r}",
            params={"grant_type": "client_credentials"},
            auth=(conn.login or "", conn.password or ""),
            headers={"Accept": "application/json"},
        )
        mask_secret(token)
        self.log.info("Fetched a Daraja access token for connection %r (valid for %.0fs)", self.conn_id, lifetime)
        return _Token(token, time.time() + lifetime, lifetime)

    def _token(self, rejected: str | None = None) -> str:
        """The app's token, taken from the shared store or renewed there when missing, near expiry or ``rejected``."""
        key = self._cache_key()
        entry = _TOKENS.get(key)
        if entry is not None and entry.fresh() and entry.value != rejected:
            return entry.value
        with _TOKEN_LOCK:
            entry = _TOKENS.get(key)  # another thread may have fetched it (or already replaced `rejected`)
            if entry is not None and entry.fresh() and entry.value != rejected:
                return entry.value
            entry = self._shared_token(rejected)
            _TOKENS[key] = entry
            return entry.value

    def _shared_token(self, rejected: str | None) -> _Token:
        """
        The app's token from the store every worker shares (:mod:`.daraja_token_store`), renewed at most once
        for everyone when it is missing, near expiry or ``rejected``.

        A token other than ``rejected`` in the store means a peer already renewed: use it, so a refused token
        is renewed once, not once per worker, and two workers never knock each other's token out in turn. A
        plain read-then-renew races (two workers both see the old token, both renew, and the token written
        last may be the one Daraja already invalidated), so renewing takes a lease: write a claim with a
        unique holder id, wait CLAIM_SETTLE_SECONDS, read it back; only the holder whose claim is still there
        renews, the others poll the store for its token. The store offers no compare-and-set (a Variable is a
        whole-value write), and the wait makes a lost claim visible: a claim written after the holder's read
        back would need a read-to-write gap longer than the settle time. Should two renew anyway, the token
        left in the store is refused once and renewed once more: it heals, it does not loop. A holder that
        dies frees the app when its claim runs out (LEASE_SECONDS); no waiter polls longer than that.
        """
        conn = self.connection
        key = token_store.variable_key(self.base_url, conn.login or "", conn.password or "")
        holder = uuid.uuid4().hex
        give_up = time.time() + LEASE_SECONDS + self.timeout
        while True:
            record = token_store.read(key) or {}
            shared = self._usable(record, rejected)
            if shared is not None:
                return shared
            claim = record.get("renewing") or {}
            now = time.time()
            if claim.get("holder") == holder:
                return self._renew(key, record)
            if now >= give_up:  # the store does not keep claims (e.g. an AIRFLOW_VAR_ shadows it): renew anyway
                self.log.warning("Renewing the Daraja token of connection %r without the shared lease", self.conn_id)
                return self._renew(key, record)
            if claim.get("holder") and float(claim.get("until") or 0) > now:
                time.sleep(POLL_SECONDS)  # a peer is renewing: its token will be in the store
                continue
            token_store.write(key, {**record, "renewing": {"holder": holder, "until": now + LEASE_SECONDS}})
            time.sleep(CLAIM_SETTLE_SECONDS)

    @staticmethod
    def _usable(record: dict[str, Any], rejected: str | None) -> _Token | None:
        """The record's token if it is fresh and not the one just refused; registered with the secret masker."""
        value = record.get("access_token")
        if not isinstance(value, str) or not value or value == rejected:
            return None
        try:
            entry = _Token(value, float(record["expires_at"]), float(record["lifetime"]))
        except (KeyError, TypeError, ValueError):
            return None
        mask_secret(value)
        return entry if entry.fresh() else None

    def _renew(self, key: str, record: dict[str, Any]) -> _Token:
        """Fetch a new token as the lease's holder and publish it; on failure free the lease at once."""
        try:
            entry = self._fetch_token()
        except BaseException:
            token_store.write(key, {**record, "renewing": None})  # peers need not wait the lease out
            raise
        token_store.write(key, entry.record())
        return entry

    def get_access_token(self) -> str:
        """
        Return a valid OAuth access token: the app's token every worker shares, renewed shortly before it expires.

        Thread-safe: concurrent callers trigger one fetch, and so do concurrent workers of a deployment. Works
        inside a task (through the Task SDK) and outside one (a script: through the metadata DB; without one,
        cached in the process). The token is registered with the secret masker.

        :raises AuthenticationError: Daraja refused the consumer key/secret (not retried).
        """
        return self._token()

    # ------------------------------------------------------------------ check
    def _interpret_check(self, number: str) -> Callable[[Reply], SimSwapRecord]:
        def interpret(reply: Reply) -> SimSwapRecord:
            if reply.status == 200:
                try:
                    return daraja.parse_check(reply.body, number)
                except M2mProviderError as exc:
                    code = getattr(exc, "error_code", None)
                    if code in daraja.INVALID_TOKEN_CODES:
                        raise _TokenRejected(reply.status, code) from None
                    raise
            error = daraja.parse_error(reply.body, reply.status, number)
            if reply.status == 401 or error.error_code in daraja.INVALID_TOKEN_CODES:
                raise _TokenRejected(reply.status, error.error_code)
            raise error

        return interpret

    def _check_request(self, number: str, token: str) -> dict[str, Any]:
        # The bearer header goes only into the request; it is never logged or put in an error.
        return {
            "data": json.dumps({"customerNumber": number}),
            "headers": {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        }

    def _with_token(self, call: Callable[[str], R]) -> R:
        token = self._token()
        try:
            return call(token)
        except _TokenRejected:
            self.log.debug("Daraja refused the access token of connection %r; renewing it", self.conn_id)
            token = self._token(rejected=token)
        try:
            return call(token)
        except _TokenRejected as exc:
            raise self._rejected_twice(exc) from None

    async def _awith_token(self, call: Callable[[str], Awaitable[R]]) -> R:
        token = self._token()
        try:
            return await call(token)
        except _TokenRejected:
            self.log.debug("Daraja refused the access token of connection %r; renewing it", self.conn_id)
            # Synchronous on purpose: the event loop runs on the caller's thread, so this briefly blocks
            # the batch (the shared store's lease and one token fetch, or a peer's renewal awaited) but keeps
            # the Task SDK's channel and mask_secret on the main thread; the lock plus the `rejected` check make
            # the other coroutines that saw the same 401 reuse the new token.
            token = self._token(rejected=token)
        try:
            return await call(token)
        except _TokenRejected as exc:
            raise self._rejected_twice(exc) from None

    def _rejected_twice(self, exc: _TokenRejected) -> AuthenticationError:
        return AuthenticationError(
            f"Connection {self.conn_id!r}: Daraja refused a freshly issued access token "
            f"(HTTP {exc.status} {exc.error_code or '-'}); is the IMSI API enabled for this app?"
        )

    def check_sim_swap(self, msisdn: str) -> SimSwapRecord:
        """
        Ask Daraja when the number's SIM was last swapped (within the last 3 months) and when it was registered.

        A refused access token (HTTP 401 or ``404.001.03``) is replaced once and the check retried once;
        429/502/503/504 and network errors are retried with backoff honouring ``Retry-After``.

        :param msisdn: ``0722000000``, ``+254722000000`` or ``254722000000``.
        :raises InvalidRequestError: not a Kenyan mobile number (nothing sent).
        :raises DarajaApiError: Daraja answered an error, e.g. ``404.001.01`` for an unknown number.
        :raises AuthenticationError: the consumer key/secret or a fresh token was refused.
        """
        number = msisdn_rules.validate(msisdn)
        url = f"{self.base_url}{CHECK_PATH}"
        interpret = self._interpret_check(number)
        what = f"checkATI {msisdn_rules.masked(number)}"
        return self._with_token(
            lambda token: self.request("POST", url, interpret, what=what, **self._check_request(number, token))
        )

    def check_sim_swaps(self, msisdns: Iterable[str] | str, max_workers: int | None = None) -> Iterator[SimSwapRecord]:
        """
        :meth:`check_sim_swap` for many numbers with bounded concurrency; yield one record per input, as
        they complete. No number: nothing is sent (not even for a token), nothing yielded.

        Every number is validated before anything is sent. Each distinct number is checked once (a check
        costs money); duplicates in the input get the same record. A number whose check failed (Daraja
        error, transient failure past the retry budget, unreadable answer) comes back with ``.error`` set
        and its other fields None; an authentication failure stops the whole batch. Inside a running event
        loop use :meth:`acheck_sim_swaps`.

        :param msisdns: one number as a plain string (never split), any iterable of numbers, or the text
            Jinja renders from a list (see :func:`~airflow_provider_m2m.protocol.values.validate_each`).
        :param max_workers: checks in flight at once (default 16).
        """
        counts = Counter(msisdn_rules.validate_many(msisdns, allow_empty=True))
        batches.refuse_inside_event_loop(f"{type(self).__name__}.acheck_sim_swaps")
        if counts:
            self.get_access_token()  # on this thread, before the loop: a bad secret stops the batch here
        records = self.map_concurrently(
            list(counts), self._check, _swap_error, max_workers, async_twin="acheck_sim_swaps"
        )
        return (record for record in records for _ in range(counts[record.msisdn]))

    async def acheck_sim_swaps(
        self, msisdns: Iterable[str] | str, max_workers: int | None = None
    ) -> list[SimSwapRecord]:
        """
        The coroutine twin of :meth:`check_sim_swaps`, for a running event loop: every record, as they came.

        The access token is fetched (when not cached) on the loop's thread, as a renewal is: one short
        blocking request per batch, which keeps the secret masker off other threads.
        """
        counts = Counter(msisdn_rules.validate_many(msisdns, allow_empty=True))
        if not counts:
            return []
        await self.afetch_connection()
        self.get_access_token()
        records = await self.agather_concurrently(list(counts), self._check, _swap_error, max_workers)
        return [record for record in records for _ in range(counts[record.msisdn])]

    async def _check(self, client: aiohttp.ClientSession, number: str) -> SimSwapRecord:
        url = f"{self.base_url}{CHECK_PATH}"
        interpret = self._interpret_check(number)
        what = f"checkATI {msisdn_rules.masked(number)}"
        return await self._awith_token(
            lambda token: self.arequest(client, "POST", url, interpret, what=what, **self._check_request(number, token))
        )

    def test_connection(self) -> tuple[bool, str]:
        """Check the consumer key/secret by fetching an access token; never raises (``(False, why)``)."""
        return self._tested(self._probe)

    def _probe(self) -> str:
        self.get_access_token()
        return f"Connection {self.conn_id!r}: Daraja issued an access token"
