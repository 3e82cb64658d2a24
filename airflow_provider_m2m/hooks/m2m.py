"""Hook for the SIM Insight M2M platform (XML over HTTPS POST)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import cached_property
from typing import Any, TypeVar

import aiohttp

from airflow_provider_m2m.exceptions import (
    AuthenticationError,
    InvalidRequestError,
    M2mApiError,
    OutcomeUnknownError,
    ProtocolError,
)
from airflow_provider_m2m.hooks import connection_forms
from airflow_provider_m2m.hooks.base import PlatformHook
from airflow_provider_m2m.protocol import iccid as iccid_rules
from airflow_provider_m2m.protocol import sim_insight, sim_status, sms
from airflow_provider_m2m.protocol.excerpt import excerpt
from airflow_provider_m2m.protocol.sim_insight import ImeiRecord, SmsDetails, SmsHistory, SmsReceipt
from airflow_provider_m2m.protocol.sim_status import SimStatus, StatusChange, UsageRecord
from airflow_provider_m2m.utils.transport import Reply, RetryPolicy

__all__ = [
    "ImeiRecord",
    "M2mHook",
    "SimStatus",
    "SmsDetails",
    "SmsHistory",
    "SmsReceipt",
    "StatusChange",
    "UsageRecord",
]

# test_connection() asks about this syntactically valid ICCID unless the connection names a real one:
# "invalid iccid" then proves the credentials were accepted, "authentication failed" that they were not.
PROBE_ICCID = "8900000000000000000"
T = TypeVar("T")
_HEADERS = {"Content-Type": sim_insight.CONTENT_TYPE, "Accept": sim_insight.CONTENT_TYPE}


def _lastx(lastx: int) -> int:
    if isinstance(lastx, bool) or not isinstance(lastx, int) or not 1 <= lastx <= 20:
        raise InvalidRequestError("lastx", "must be an integer from 1 to 20", repr(lastx))
    return lastx


def _imei_error(number: str, error: str) -> ImeiRecord:
    return ImeiRecord(iccid=number, error=error)


def _history_error(number: str, error: str) -> SmsHistory:
    return SmsHistory(number, error=error)


def _status_error(number: str, error: str) -> SimStatus:
    return SimStatus(iccid=number, error=error)


class M2mHook(PlatformHook):
    """
    Talk to SIM Insight: which device (IMEI) each SIM sits in, and SMS to SIMs.

    The connection's host is the base URL (``https://api.m2miportal.com``), login and password are the API
    username and password, and extras are ``api_id`` (required), ``timeout`` (s), ``verify`` (TLS) and
    ``max_requests_per_second``. Single calls share one keep-alive session; :meth:`query_imeis` runs a batch
    with bounded concurrency over one aiohttp session whose pool matches the concurrency.

    .. code-block:: python

        hook = M2mHook(m2m_conn_id="m2m_default")
        record = hook.query_imei("8925401000000000012")
        for record in hook.query_imeis(fleet_iccids, max_workers=32): ...

    :param m2m_conn_id: the Airflow connection id (conn type ``m2m``).
    :param retry_policy: how transient failures are retried
        (:class:`~airflow_provider_m2m.utils.transport.RetryPolicy`).
    """

    conn_name_attr = "m2m_conn_id"
    default_conn_name = "m2m_default"
    conn_type = "m2m"
    hook_name = "SIM Insight M2M"
    # Airflow 3.1's UI builds the form from these two; 3.2+ reads provider info and never calls them.
    get_connection_form_widgets = connection_forms.form_widgets
    get_ui_field_behaviour = connection_forms.field_behaviour

    required_extras = {"api_id": "is required by SIM Insight"}

    def __init__(self, m2m_conn_id: str = default_conn_name, *, retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(retry_policy=retry_policy)
        self.m2m_conn_id = m2m_conn_id

    @cached_property
    def api_id(self) -> str:
        """The account's API id (connection extra ``api_id``, required: :meth:`fetch_connection` checks it)."""
        return str(self.extra("api_id"))

    @property
    def _credentials(self) -> dict[str, str]:
        return {
            "api_id": self.api_id,
            "username": self.connection.login or "",
            "password": self.connection.password or "",
        }

    def _body(self, command: str, fields: Iterable[tuple[str, str | None]]) -> bytes:
        return sim_insight.build_request(command, **self._credentials, fields=fields)

    def _interpret(
        self, command: str, parse: Callable[[bytes, list[str]], Any] | None = None, *, iccid: str | None = None
    ) -> Any:
        """Turn a final reply into the command's result; a platform failure names ``iccid`` (the SIM asked about)."""
        secrets = [self.connection.password or ""]

        def interpret(reply: Reply) -> Any:
            if reply.status in (401, 403):
                raise AuthenticationError(f"Connection {self.conn_id!r}: SIM Insight answered HTTP {reply.status}")
            if 400 <= reply.status < 500:  # the platform's final word, whatever the body (transport.py)
                description = f"HTTP {reply.status}: {excerpt(reply.body, secrets)}"
                raise M2mApiError(command, description, reply.status, iccid=iccid)
            if reply.status != 200:
                raise ProtocolError(f"SIM Insight {command}: HTTP {reply.status}: {excerpt(reply.body, secrets)}")
            try:
                if parse is not None:
                    return parse(reply.body, secrets)
                return sim_insight.parse_response(command, reply.body, secrets)
            except AuthenticationError as exc:
                raise AuthenticationError(f"Connection {self.conn_id!r}: {exc}") from None
            except M2mApiError as exc:
                if iccid is None or exc.iccid is not None:
                    raise
                raise exc.for_sim(iccid) from None

        return interpret

    def call(
        self,
        command: str,
        fields: Iterable[tuple[str, str | None]],
        *,
        what: str,
        idempotent: bool = True,
        iccid: str | None = None,
    ) -> dict[str, str | None]:
        """
        Send one SIM Insight command and return the response's fields (empty elements as None).

        :param command: the command, e.g. ``query_status``.
        :param fields: ``(element, text)`` pairs after the authentication block.
        :param what: a secret-free description for logs and errors.
        :param idempotent: False when the command must never be carried out twice.
        :param iccid: the SIM the command is about: a platform failure (:class:`M2mApiError`) names it.
        """
        return self.request(
            "POST",
            self.base_url,
            self._interpret(command, iccid=iccid),
            what=what,
            idempotent=idempotent,
            data=self._body(command, fields),
            headers=_HEADERS,
        )

    async def acall(
        self,
        client: aiohttp.ClientSession,
        data: bytes,
        interpret: Callable[[Reply], Any],
        *,
        what: str,
        idempotent: bool = True,
    ) -> Any:
        """
        The batch twin of :meth:`call`: POST one request body over a batch's aiohttp session, same retries.

        :param client: the batch's session.
        :param data: the request body (from :meth:`_body` or a request template).
        :param interpret: turns the final reply into the result (:meth:`_interpret`).
        :param what: a secret-free description for logs and errors.
        :param idempotent: False when the command must never be carried out twice.
        """
        return await self.arequest(
            client, "POST", self.base_url, interpret, what=what, idempotent=idempotent, data=data, headers=_HEADERS
        )

    def query_imei(self, iccid: str) -> ImeiRecord:
        """
        Ask which device the SIM sits in, when that changed, and the device before.

        :param iccid: the SIM's ICCID (18-22 digits).
        :raises M2mApiError: the platform answered failure (e.g. ``invalid iccid``).
        """
        number = iccid_rules.validate(iccid)
        fields = self.call("query_imei", [("iccid", number)], what=f"query_imei {number}", iccid=number)
        return sim_insight.imei_record(number, fields)

    def query_imeis(self, iccids: Iterable[str] | str, max_workers: int | None = None) -> Iterator[ImeiRecord]:
        """
        :meth:`query_imei` for many SIMs with bounded concurrency; yield one record per input ICCID, as
        they complete. No ICCID: nothing is sent, nothing yielded.

        Every ICCID is validated before anything is sent. A SIM whose query failed (platform failure,
        transient failure past the retry budget, unreadable answer) comes back with ``.error`` set and its
        other fields None; an authentication failure stops the whole batch. Inside a running event loop
        (Jupyter, async code) use :meth:`aquery_imeis`: this refuses with a message saying so.

        :param iccids: the ICCIDs: one as a plain string (never split), any iterable of them, or the text
            Jinja renders from a list (see :func:`~airflow_provider_m2m.protocol.values.validate_each`).
        :param max_workers: calls in flight at once (default 16).
        """
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return self.map_concurrently(numbers, self._query_imei, _imei_error, max_workers, async_twin="aquery_imeis")

    async def aquery_imeis(self, iccids: Iterable[str] | str, max_workers: int | None = None) -> list[ImeiRecord]:
        """The coroutine twin of :meth:`query_imeis`, for a running event loop: every record, as they came."""
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return await self.agather_concurrently(numbers, self._query_imei, _imei_error, max_workers)

    async def _query_imei(self, client: aiohttp.ClientSession, number: str) -> ImeiRecord:
        return await self._query_sim(client, "query_imei", number, sim_insight.imei_record)

    async def _query_sim(
        self,
        client: aiohttp.ClientSession,
        command: str,
        number: str,
        record: Callable[[str, dict[str, str | None]], T],
    ) -> T:
        """One per-SIM query of a batch (``query_imei``, ``query_status``): its answer as ``record(iccid, fields)``."""
        fields = await self.acall(
            client,
            self._body(command, [("iccid", number)]),
            self._interpret(command, iccid=number),
            what=f"{command} {number}",
        )
        return record(number, fields)

    def send_sms(
        self,
        iccid: str,
        message_text: str,
        data_coding: str = "default",
        origin: str | None = None,
        sms_uid: str | None = None,
    ) -> SmsReceipt:
        """
        Send one SMS to a SIM. Never sent twice by the hook: once the request may have reached the
        platform (read timeout, dropped connection, 502/504, unreadable answer) it is not retried and
        :class:`~airflow_provider_m2m.exceptions.OutcomeUnknownError` is raised carrying the ``sms_uid``, so
        :meth:`find_sms` can settle it later.

        :param iccid: the SIM's ICCID.
        :param message_text: GSM-7 text of at most 160 septets, or base64 (``binary``, at most 120 bytes).
        :param data_coding: ``default`` or ``binary``.
        :param origin: the sender number (digits); honoured on some SIM types only.
        :param sms_uid: the message's uid (1-12 ASCII letters/digits); generated when not given.
        """
        number, uid, fields = self._sms_request(iccid, message_text, data_coding, origin, sms_uid)
        try:
            answer = self.call(
                "send_sms", fields, what=f"send_sms {number} sms_uid={uid}", idempotent=False, iccid=number
            )
        except OutcomeUnknownError as exc:
            raise OutcomeUnknownError(str(exc), sms_uid=uid) from None
        return SmsReceipt(iccid=number, sms_uid=answer.get("sms_uid") or uid)

    async def asend_sms(
        self,
        client: aiohttp.ClientSession,
        iccid: str,
        message_text: str,
        data_coding: str = "default",
        origin: str | None = None,
        sms_uid: str | None = None,
    ) -> SmsReceipt:
        """
        :meth:`send_sms` over a batch's aiohttp session (the ``work`` of :meth:`map_concurrently`), under the
        same rules: retried only on an answer that proves the platform did not act (connection refused,
        429, 503); otherwise exactly one request and :class:`OutcomeUnknownError` carrying the ``sms_uid``.

        :param client: the batch's session.
        :param iccid: the SIM's ICCID.
        :param message_text: as for :meth:`send_sms`.
        :param data_coding: ``default`` or ``binary``.
        :param origin: the sender number (digits), or None.
        :param sms_uid: the message's uid; generated when not given.
        """
        number, uid, fields = self._sms_request(iccid, message_text, data_coding, origin, sms_uid)
        try:
            answer = await self.acall(
                client,
                self._body("send_sms", fields),
                self._interpret("send_sms", iccid=number),
                what=f"send_sms {number} sms_uid={uid}",
                idempotent=False,
            )
        except OutcomeUnknownError as exc:
            raise OutcomeUnknownError(str(exc), sms_uid=uid) from None
        return SmsReceipt(iccid=number, sms_uid=answer.get("sms_uid") or uid)

    @staticmethod
    def _sms_request(
        iccid: str, message_text: str, data_coding: str, origin: str | None, sms_uid: str | None
    ) -> tuple[str, str, list[tuple[str, str | None]]]:
        """Validate one SMS; return the ICCID, the uid (generated when None) and the request's fields."""
        number = iccid_rules.validate(iccid)
        coding = sms.validate_data_coding(data_coding)
        text = sms.validate_message(message_text, coding)
        sender = sms.validate_origin(origin) if origin is not None else None
        uid = sms.validate_uid(sms_uid) if sms_uid is not None else sms.random_uid()
        fields = [
            ("iccid", number),
            ("message_text", text),
            ("data_coding", coding),
            ("origin", sender),
            ("sms_uid", uid),
        ]
        return number, uid, fields

    def query_sms_mt_details(self, iccid: str, lastx: int = 1) -> list[SmsDetails]:
        """
        The SIM's most recent mobile-terminated messages, newest first, with their delivery status
        (``query_sms_mt_details``); an empty list when the SIM has none.

        :param iccid: the SIM's ICCID.
        :param lastx: how many messages, 1 to 20 (the platform's default is 1).
        :raises M2mApiError: the platform answered failure (e.g. ``invalid iccid``).
        """
        number = iccid_rules.validate(iccid)
        return self.request(
            "POST",
            self.base_url,
            self._sms_mt_details_interpret(number),
            what=f"query_sms_mt_details {number}",
            data=self._body("query_sms_mt_details", [("iccid", number), ("lastx", str(_lastx(lastx)))]),
            headers=_HEADERS,
        )

    def query_sms_histories(
        self, iccids: Iterable[str] | str, lastx: int = 1, max_workers: int | None = None
    ) -> Iterator[SmsHistory]:
        """
        :meth:`query_sms_mt_details` for many SIMs with bounded concurrency: one :class:`SmsHistory` per
        ICCID, as they complete; a SIM whose query failed has ``.error`` set; an authentication failure
        stops the batch. Every ICCID is validated before anything is sent; no ICCID: nothing yielded.
        Inside a running event loop use :meth:`aquery_sms_histories`.

        :param iccids: the ICCIDs, as :meth:`query_imeis` takes them.
        :param lastx: messages per SIM, 1 to 20.
        :param max_workers: queries in flight at once (default 16).
        """
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return self.map_concurrently(
            numbers, self._history_query(lastx), _history_error, max_workers, async_twin="aquery_sms_histories"
        )

    async def aquery_sms_histories(
        self, iccids: Iterable[str] | str, lastx: int = 1, max_workers: int | None = None
    ) -> list[SmsHistory]:
        """The coroutine twin of :meth:`query_sms_histories` (the sensor and the trigger poll with it)."""
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return await self.agather_concurrently(numbers, self._history_query(lastx), _history_error, max_workers)

    def _history_query(self, lastx: int) -> Callable[[aiohttp.ClientSession, str], Awaitable[SmsHistory]]:
        then = ("lastx", str(_lastx(lastx)))

        async def query(client: aiohttp.ClientSession, number: str) -> SmsHistory:
            messages = await self.acall(
                client,
                self._body("query_sms_mt_details", [("iccid", number), then]),
                self._sms_mt_details_interpret(number),
                what=f"query_sms_mt_details {number}",
            )
            return SmsHistory(number, tuple(messages))

        return query

    def _sms_mt_details_interpret(self, number: str) -> Callable[[Reply], list[SmsDetails]]:
        return self._interpret(
            "query_sms_mt_details",
            lambda body, secrets: sim_insight.sms_mt_details(number, body, secrets),
            iccid=number,
        )

    def find_sms(self, iccid: str, sms_uid: str) -> bool:
        """True when the platform's recent history (last 20 messages) for the SIM holds ``sms_uid``."""
        return any(m.sms_uid == sms_uid for m in self.query_sms_mt_details(iccid, lastx=20))

    async def afind_sms(self, client: aiohttp.ClientSession, iccid: str, sms_uid: str) -> bool:
        """:meth:`find_sms` over a batch's aiohttp session (it only reads: retried like any query)."""
        history = await self._history_query(20)(client, iccid_rules.validate(iccid))
        return history.find(sms_uid) is not None

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the credentials with a harmless query (SIM Insight has no ping).

        Queries the IMEI of the connection extra ``test_iccid`` (or a placeholder ICCID). A success or an
        ``invalid iccid`` failure both prove the platform accepted the credentials; an authentication
        failure proves it did not.
        """
        return self._tested(self._probe)

    def _probe(self) -> str:
        try:
            record = self.query_imei(str(self.extra("test_iccid", PROBE_ICCID)))
        except M2mApiError as exc:
            if exc.status != 200:  # refused outright (a wrong host or path): it proves nothing
                raise
            return f"Credentials accepted (the probe query answered: {exc.description})"
        return f"Credentials accepted; SIM {record.iccid} is in device {record.current_imei or 'unknown'}"

    # ------------------------------------------------------------------ SIM status and usage
    def query_status(self, iccid: str) -> SimStatus:
        """
        The SIM's status: ``active``, ``deactivated`` or ``closed`` (permanent: make no further calls for it).

        :param iccid: the SIM's ICCID.
        :raises M2mApiError: the platform answered failure (e.g. ``invalid iccid``).
        """
        number = iccid_rules.validate(iccid)
        fields = self.call("query_status", [("iccid", number)], what=f"query_status {number}", iccid=number)
        return sim_status.sim_status(number, fields)

    def query_statuses(self, iccids: Iterable[str] | str, max_workers: int | None = None) -> Iterator[SimStatus]:
        """
        :meth:`query_status` for many SIMs with bounded concurrency, like :meth:`query_imeis`: one record per
        input ICCID as they complete; a SIM whose query failed has ``.error`` set and ``status`` None.

        :param iccids: the ICCIDs (as for :meth:`query_imeis`); all validated before anything is sent.
        :param max_workers: calls in flight at once (default 16).
        """
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return self.map_concurrently(
            numbers, self._query_status, _status_error, max_workers, async_twin="aquery_statuses"
        )

    async def aquery_statuses(self, iccids: Iterable[str] | str, max_workers: int | None = None) -> list[SimStatus]:
        """The coroutine twin of :meth:`query_statuses`, for a running event loop: every record, as they came."""
        numbers = iccid_rules.validate_many(iccids, allow_empty=True)
        return await self.agather_concurrently(numbers, self._query_status, _status_error, max_workers)

    async def _query_status(self, client: aiohttp.ClientSession, number: str) -> SimStatus:
        return await self._query_sim(client, "query_status", number, sim_status.sim_status)

    def set_status(self, iccid: str, status: str) -> StatusChange:
        """
        Activate or deactivate a SIM (``set_status``): a command, carried out at once by the platform.

        Both arguments are validated before anything is sent. The request carries the platform's own
        spelling (``de-activated``). Like an SMS it is never retried once it may have reached the platform:
        :class:`~airflow_provider_m2m.exceptions.OutcomeUnknownError` is raised instead, and the caller reads
        the status back (:meth:`query_status`) to settle it.

        :param iccid: the SIM's ICCID.
        :param status: ``active`` or ``deactivated`` (any case). ``closed`` cannot be set.
        :raises M2mApiError: the platform refused (e.g. ``invalid iccid``, ``invalid content``).
        """
        number = iccid_rules.validate(iccid)
        target = sim_status.validate_target(status)
        word = sim_status.set_status_word(target)
        self.call(
            "set_status",
            [("iccid", number), ("status", word)],
            what=f"set_status {number} {word}",
            idempotent=False,
            iccid=number,
        )
        return StatusChange(iccid=number, status=target)

    def query_usage(self, iccid: str) -> UsageRecord:
        """
        The SIM's usage this calendar month: data (MB), chargeable SMS, voice minutes.

        The platform's figures lag by a few hours and the call fans out to partner networks, which may
        rate-limit it: ask once a day, not in a polling loop.

        :param iccid: the SIM's ICCID.
        :raises M2mApiError: the platform answered failure (e.g. ``invalid iccid``).
        """
        number = iccid_rules.validate(iccid)
        fields = self.call("query_usage", [("iccid", number)], what=f"query_usage {number}", iccid=number)
        return sim_status.usage_record(number, fields)
