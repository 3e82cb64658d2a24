"""What both platform hooks share: the connection's settings, one keep-alive session, retries, rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Any, TypeVar

import aiohttp
import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter

from airflow_provider_m2m import transport
from airflow_provider_m2m.exceptions import InvalidRequestError
from airflow_provider_m2m.transport import Attempts, RateLimiter, Reply, RetryPolicy
from airflow_provider_m2m.version_compat import amask_secret, mask_secret

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

    :param conn_id: the Airflow connection id.
    :param retry_policy: how transient failures are retried (defaults to :class:`RetryPolicy`).
    """

    def __init__(self, conn_id: str, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.retry_policy = retry_policy or RetryPolicy()

    @cached_property
    def connection(self) -> Any:
        """The Airflow connection; its password is masked in logs from here on."""
        conn = self.get_connection(self.conn_id)
        if conn.password:
            mask_secret(conn.password)
        return conn

    def extra(self, name: str, default: Any = None) -> Any:
        """An extra field, plain (``timeout``) or as the UI may store it (``extra__<type>__timeout``)."""
        extras = self.connection.extra_dejson
        value = extras.get(name, extras.get(f"extra__{self.conn_type}__{name}"))
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

    def attempts(self, what: str, *, idempotent: bool = True) -> Attempts:
        """Retry bookkeeping for one logical call."""
        return Attempts(self.retry_policy, what, self.log, idempotent=idempotent, limiter=self.limiter)

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
        return transport.call_sync(
            self.attempts(what, idempotent=idempotent),
            lambda: transport.send_sync(self.session, method, url, timeout=self.timeout, **kwargs),
            interpret,
            self.limiter,
        )

    async def arequest(
        self,
        client: aiohttp.ClientSession,
        method: str,
        url: str,
        interpret: Callable[[Reply], R],
        *,
        what: str,
        **kwargs: Any,
    ) -> R:
        """The concurrent twin of :meth:`request` (idempotent calls only), over a batch's aiohttp session."""
        return await transport.call_async(
            self.attempts(what),
            lambda: transport.send_async(client, method, url, **kwargs),
            interpret,
            self.limiter,
        )

    def _workers(self, max_workers: int | None) -> int:
        workers = DEFAULT_MAX_WORKERS if max_workers is None else max_workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS_LIMIT:
            raise InvalidRequestError("max_workers", f"must be an integer from 1 to {MAX_WORKERS_LIMIT}")
        return workers

    @asynccontextmanager
    async def batch_session(self, workers: int) -> AsyncIterator[aiohttp.ClientSession]:
        """One aiohttp session for a batch; its connection pool matches the concurrency."""
        connector = aiohttp.TCPConnector(limit=workers, ssl=None if self.verify else False)
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
        items: Iterable[T],
        work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
        max_workers: int | None = None,
    ) -> Iterator[R]:
        """Run ``work`` for every item with at most ``max_workers`` in flight; yield results as they come."""
        workers = self._workers(max_workers)
        self.connection  # noqa: B018  - fetch the connection and mask its secret on this thread first
        return transport.map_concurrently(items, work, session=lambda: self.batch_session(workers), max_workers=workers)

    async def aconnection(self) -> Any:
        """:attr:`connection`, fetched without blocking the event loop (in a trigger); masked the same way."""
        if "connection" not in self.__dict__:
            conn = await self.aget_connection(self.conn_id)
            if conn.password:
                await amask_secret(conn.password)
            self.__dict__["connection"] = conn
        return self.connection

    async def agather_concurrently(
        self,
        items: Iterable[T],
        work: Callable[[aiohttp.ClientSession, T], Awaitable[R]],
        max_workers: int | None = None,
    ) -> list[R]:
        """The coroutine twin of :meth:`map_concurrently`, for a running event loop: all results, as they came."""
        workers = self._workers(max_workers)
        await self.aconnection()
        return await transport.gather_concurrently(
            items, work, session=lambda: self.batch_session(workers), max_workers=workers
        )
