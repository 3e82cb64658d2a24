"""What both platform hooks share: the connection's settings, one keep-alive session, retries, rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter

from airflow_provider_m2m.exceptions import AuthenticationError, InvalidRequestError, M2mProviderError
from airflow_provider_m2m.utils import batches, transport
from airflow_provider_m2m.utils.transport import Attempts, RateLimiter, Reply, RetryPolicy
from airflow_provider_m2m.utils.version_compat import amask_secret, mask_secret

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_WORKERS = 16
MAX_WORKERS_LIMIT = 256


class PlatformHook(BaseHook):
    """
    Base of :class:`~airflow_provider_m2m.hooks.m2m.M2mHook` and :class:`~airflow_provider_m2m.hooks.daraja.DarajaHook`.

    Reads the connection once, registers its password with the secret masker, and owns one keep-alive
    :class:`requests.Session` for single calls plus an aiohttp session per batch. Unlike HttpHook, no
    connection extra ever becomes an HTTP header.

    A subclass stores its connection id under the attribute named by ``conn_name_attr`` (Airflow's own
    convention: ``m2m_conn_id``, ``daraja_conn_id``), the one place the id lives.

    :param retry_policy: how transient failures are retried (defaults to :class:`RetryPolicy`).
    """

    # Airflow's hook attributes, which each subclass sets (ProvidersManager refuses a hook without them).
    conn_name_attr: str
    conn_type: str

    #: Connection extras the platform cannot work without: ``{extra: rule}``, checked by :meth:`fetch_connection`.
    required_extras: dict[str, str] = {}

    def __init__(self, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.retry_policy = retry_policy or RetryPolicy()
        self.scheme_assumed = False  # set by base_url
        self._places: dict[str, str] = {}  # url -> how _where shows it
        self._connection: Any = None  # set by fetch_connection

    @property
    def conn_id(self) -> str:
        """The connection id, read from the attribute ``conn_name_attr`` names."""
        return getattr(self, self.conn_name_attr)

    @property
    def connection(self) -> Any:
        """The Airflow connection (fetched on first use, see :meth:`fetch_connection`)."""
        return self.fetch_connection()

    def fetch_connection(self) -> Any:
        """
        Fetch the connection on this thread, register its password with the secret masker, and check the
        extras the platform requires, once. Call it before a batch's event loop starts (the masker is not
        to be called from inside it) and before anything is sent (a missing extra is bad input).

        :raises InvalidRequestError: a required extra is missing.
        """
        if self._connection is None:
            conn = self.get_connection(self.conn_id)
            if conn.password:
                mask_secret(conn.password)
            self._connection = self._checked(conn)
        return self._connection

    async def afetch_connection(self) -> Any:
        """:meth:`fetch_connection` without blocking the event loop (in a trigger); masked the same way."""
        if self._connection is None:
            conn = await self.aget_connection(self.conn_id)
            if conn.password:
                await amask_secret(conn.password)
            self._connection = self._checked(conn)
        return self._connection

    def _checked(self, conn: Any) -> Any:
        for name, rule in self.required_extras.items():
            if self._extra_of(conn, name) in (None, ""):
                raise InvalidRequestError(f"connection {self.conn_id!r} extra {name!r}", rule)
        return conn

    def _extra_of(self, conn: Any, name: str) -> Any:
        extras = conn.extra_dejson
        return extras.get(name, extras.get(f"extra__{self.conn_type}__{name}"))

    def extra(self, name: str, default: Any = None) -> Any:
        """An extra field, plain (``timeout``) or as the UI may store it (``extra__<type>__timeout``)."""
        value = self._extra_of(self.connection, name)
        return default if value in (None, "") else value

    def _number_extra(self, name: str, default: float | None) -> float | None:
        value = self.extra(name, default)
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            raise InvalidRequestError(
                f"connection {self.conn_id!r} extra {name!r}", "must be a number", repr(value)
            ) from None

    @cached_property
    def base_url(self) -> str:
        """The platform's base URL from the connection's host (``https://`` assumed without a scheme)."""
        host = (self.connection.host or "").strip().rstrip("/")
        if not host:
            raise InvalidRequestError(f"connection {self.conn_id!r} host", "must be the platform's base URL")
        if "://" not in host:
            self.scheme_assumed = True
            host = f"https://{host}"
        if self.connection.port:
            host = f"{host}:{self.connection.port}"
        return host

    @cached_property
    def timeout(self) -> float:
        """Seconds to wait for one answer (extra ``timeout``, default 30)."""
        return self._number_extra("timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT

    @cached_property
    def verify(self) -> bool:
        """Verify TLS certificates (extra ``verify``, default true)."""
        return str(self.extra("verify", True)).lower() not in ("false", "0", "no", "off")

    @cached_property
    def limiter(self) -> RateLimiter:
        """The task-wide rate limit (extra ``max_requests_per_second``; empty means none)."""
        return RateLimiter(self._number_extra("max_requests_per_second", None))

    @cached_property
    def session(self) -> requests.Session:
        """One keep-alive session for every single call this hook makes."""
        session = requests.Session()
        session.verify = self.verify
        session.trust_env = True
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def get_conn(self) -> requests.Session:
        """Return the hook's keep-alive :class:`requests.Session`."""
        return self.session

    def close(self) -> None:
        """Close the keep-alive session."""
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]

    def attempts(self, what: str, url: str, *, idempotent: bool = True) -> Attempts:
        """Retry bookkeeping for one logical call to ``url``, under the task-wide rate limit."""
        return Attempts(
            self.retry_policy, what, self.log, idempotent=idempotent, limiter=self.limiter, where=self._where(url)
        )

    def request(
        self,
        method: str,
        url: str,
        interpret: Callable[[Reply], R],
        *,
        what: str,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> R:
        """
        Send one request over the keep-alive session, with retries and the rate limit.

        :param method: the HTTP method.
        :param url: the full URL.
        :param interpret: turns the final reply into the result (raising the platform's errors).
        :param what: a secret-free description of the call for logs and errors.
        :param idempotent: False for a request that must never run twice (an SMS).
        :param kwargs: passed to :meth:`requests.Session.request` (``data``, ``headers``, ...).
        """
        try:
            return transport.call_sync(
                self.attempts(what, url, idempotent=idempotent),
                lambda: transport.send_sync(self.session, method, url, timeout=self.timeout, **kwargs),
                interpret,
            )
        except transport.SendError as exc:
            raise self._wrong_connection(exc, url) from None

    async def arequest(
        self,
        client: aiohttp.ClientSession,
        method: str,
        url: str,
        interpret: Callable[[Reply], R],
        *,
        what: str,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> R:
        """The concurrent twin of :meth:`request`, over a batch's aiohttp session; the same retry rules."""
        try:
            return await transport.call_async(
                self.attempts(what, url, idempotent=idempotent),
                lambda: transport.send_async(client, method, url, **kwargs),
                interpret,
            )
        except transport.SendError as exc:
            raise self._wrong_connection(exc, url) from None

    def _wrong_connection(self, exc: transport.SendError, url: str) -> InvalidRequestError:
        # Only a network failure no attempt can fix escapes the retries: a failed TLS handshake (the wrong
        # scheme, a refused certificate). That is a wrong connection, not bad luck: it fails as bad input.
        return InvalidRequestError(f"connection {self.conn_id!r} host", f"{exc.reason}{self._where(url)}")

    def _where(self, url: str) -> str:
        """
        Where a network failure happened, for its message: the URL (never credentials) and, when the
        connection's host had no scheme, that https:// was assumed (against a plain-HTTP server, the cause).
        Worked out once per URL: every request of a batch asks.
        """
        where = self._places.get(url)
        if where is None:
            note = ""
            if self.scheme_assumed:
                note = "; https:// was assumed because the connection's host has no scheme (plain HTTP needs http://)"
            where = self._places[url] = f" at {_shown(url)}{note}"
        return where

    def _tested(self, probe: Callable[[], str]) -> tuple[bool, str]:
        """
        ``test_connection``'s answer: ``(True, what probe says)``, or ``(False, why)``; it never raises (the
        UI shows the message). One attempt only: the UI waits for the answer, and a retry would not change it.
        """
        policy = self.retry_policy
        self.retry_policy = replace(policy, max_attempts=1)
        try:
            return True, probe()
        except M2mProviderError as exc:  # its message names the connection or the call already
            return False, str(exc)
        except Exception as exc:  # an unusable host, a missing connection: still an answer, not a crash
            return False, f"Connection {self.conn_id!r}: {exc}"
        finally:
            self.retry_policy = policy

    def _workers(self, max_workers: int | None) -> int:
        workers = DEFAULT_MAX_WORKERS if max_workers is None else max_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS_LIMIT:
            raise InvalidRequestError("max_workers", f"must be an integer from 1 to {MAX_WORKERS_LIMIT}")
        return workers

    @asynccontextmanager
    async def batch_session(self, workers: int) -> AsyncIterator[aiohttp.ClientSession]:
        """One aiohttp session for a batch; its connection pool matches the concurrency."""
        connector = aiohttp.TCPConnector(limit=workers, ssl=self.verify)
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(self.timeout, 10.0))
        # Proxy settings come from the environment like requests does, looked up once per batch
        # (aiohttp's trust_env repeats that lookup in a thread for every request).
        proxies = requests.utils.get_environ_proxies(self.base_url)
        proxy = proxies.get(self.base_url.split(":", 1)[0]) or proxies.get("all")
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, proxy=proxy, trust_env=False, raise_for_status=False
        ) as client:
            yield client

    def map_concurrently(
        self,
        items: list[T],
        work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
        error_row: Callable[[T, str], R],
        max_workers: int | None,
        *,
        async_twin: str,
    ) -> Iterator[R]:
        """
        Run ``work`` for every item with at most ``max_workers`` in flight; yield results as they come.

        A failure of one item becomes ``error_row(item, message)``; an authentication failure is the
        account's, not the item's, and stops the batch. No items: nothing is fetched, nothing yielded.

        :param async_twin: the coroutine method to name when this is called inside a running event loop.
        """
        workers = self._workers(max_workers)
        batches.refuse_inside_event_loop(f"{type(self).__name__}.{async_twin}")
        if not items:
            return iter(())
        self.fetch_connection()  # on this thread, before the loop starts
        results = batches.map_concurrently(
            items, _one_item(work, error_row), session=lambda: self.batch_session(workers), max_workers=workers
        )
        return self._paced(results) if self.limiter.rate else results

    def _paced(self, results: Iterator[R]) -> Iterator[R]:
        """``results``, then a log line of what the rate limit cost the batch (where its time at the limit went)."""
        before = self.limiter.costs()  # the hook's limiter serves its every batch: this one's share is the difference
        yield from results
        self.log.info("The batch was %s", self.limiter.pacing(since=before))

    async def agather_concurrently(
        self,
        items: list[T],
        work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
        error_row: Callable[[T, str], R],
        max_workers: int | None,
    ) -> list[R]:
        """The coroutine twin of :meth:`map_concurrently`, for a running event loop: all results, as they came."""
        workers = self._workers(max_workers)
        if not items:
            return []
        await self.afetch_connection()
        return await batches.gather_concurrently(
            items, _one_item(work, error_row), session=lambda: self.batch_session(workers), max_workers=workers
        )


def _shown(url: str) -> str:
    """``url`` without user info, query or fragment: safe for logs and errors."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _one_item(
    work: Callable[[aiohttp.ClientSession, T], Awaitable[R]], error_row: Callable[[T, str], R]
) -> Callable[[aiohttp.ClientSession, T], Awaitable[R]]:
    """``work`` for one item of a batch: a failure of that item alone becomes its error row."""

    async def one(client: aiohttp.ClientSession, item: T) -> R:
        try:
            return await work(client, item)
        except AuthenticationError:
            raise
        except M2mProviderError as exc:
            return error_row(item, str(exc))

    return one
