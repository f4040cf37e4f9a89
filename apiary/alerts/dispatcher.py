"""Sending alerts: signed webhooks and e-mail, retried with backoff, every attempt logged.

Deliveries are rows (`alert_deliveries`), so none is lost to a restart: each process that
runs the runtime (`apiary serve`, `apiary worker`) runs one dispatcher, an asyncio task
that claims due deliveries with one conditional UPDATE (so two replicas never send the
same one together), sends them concurrently (up to `concurrency`), records each attempt,
and sets the next attempt's time on a network error, a timeout, a 5xx or a 429
(`retry_base_s` doubling up to `retry_max_s`, a little jitter, never sooner than
`Retry-After`) until `max_attempts`; any other 4xx, or a URL that now resolves to a private
address, gives up at once. It is woken when a transaction that wrote deliveries commits in
this process, and otherwise looks every `poll_interval_s` (deliveries raised by another
process, a CLI command, a replica that died holding a claim, which lapses). A delivery may
be sent twice if a process dies between sending and recording it: receivers drop repeats
by the event id.

Why not Celery: a webhook is one short HTTP request; the API processes are always
running and idle most of the time, and the rows are the queue's source of truth anyway
(the log, replays), so a broker would only add a second copy of the state. A process
claims only what it can send: e-mail with an SMTP host configured, the platform's webhooks
with their secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import random
import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.alerts.messages import render, webhook_body
from apiary.alerts.repository import Outgoing, alert_repository
from apiary.alerts.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header
from apiary.alerts.urls import UnsafeUrl, check_url
from apiary.config import AlertSettings
from apiary.db import session_scope, utcnow

log = logging.getLogger("apiary.alerts")

MAX_RETRY_AFTER_S = 86_400.0
_BODY_KEPT = 200  # characters of a refusing receiver's answer kept in the log


@dataclass(frozen=True, slots=True)
class Result:
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def backoff_s(attempt: int, settings: AlertSettings, retry_after: float | None = None) -> float:
    """Seconds before the attempt after number `attempt` (1-based)."""
    delay: float = min(settings.retry_max_s, settings.retry_base_s * 2.0 ** (attempt - 1))
    delay = delay * random.uniform(1.0, 1.25)  # noqa: S311 - spreads retries, not a secret
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


class AlertDispatcher:
    def __init__(self, factory: async_sessionmaker[AsyncSession], settings: AlertSettings) -> None:
        self._factory = factory
        self._settings = settings
        self._http: httpx.AsyncClient | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._email = settings.smtp_host is not None
        self._platform_webhooks = settings.platform_webhook_secret is not None

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._settings.timeout_s),
                follow_redirects=False,  # a redirect could point anywhere, inside too
                trust_env=False,
                headers={"user-agent": "Apiary-Webhooks/1"},
            )
            self._task = asyncio.create_task(self._run(), name="alerts-dispatcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self) -> None:
        poll = self._settings.poll_interval_s
        while True:
            self._wakeup.clear()
            try:
                sent = await self.run_due()
            except Exception as error:
                log.warning("alert deliveries not sent (%s: %s)", type(error).__name__, error)
                sent = 0
            if sent:
                continue
            timeout = poll
            with contextlib.suppress(Exception):
                async with self._factory() as session:
                    due = await alert_repository.next_due(
                        session,
                        now=utcnow(),
                        email=self._email,
                        platform_webhooks=self._platform_webhooks,
                    )
                if due is not None:
                    timeout = min(poll, max(0.01, (due - utcnow()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    async def run_due(self) -> int:
        """Claim and send what is due now; how many were claimed."""
        now = utcnow()
        lease = dt.timedelta(seconds=self._settings.timeout_s * 2 + 60)
        async with session_scope(self._factory) as session:
            claimed = await alert_repository.claim_due(
                session,
                now=now,
                until=now + lease,
                limit=self._settings.concurrency,
                email=self._email,
                platform_webhooks=self._platform_webhooks,
            )
        if claimed:
            await asyncio.gather(*(self._deliver(delivery_id) for delivery_id in claimed))
        return len(claimed)

    async def _deliver(self, delivery_id: uuid.UUID) -> None:
        try:
            async with self._factory() as session:
                outgoing = await alert_repository.outgoing(session, delivery_id)
            if outgoing is None:
                return
            delivery = outgoing.delivery
            number = delivery.attempts + 1
            started = time.perf_counter()
            if delivery.tenant_id is not None and outgoing.channel is None:
                result = Result(False, error="the channel was deleted")
            elif delivery.channel_kind == "webhook":
                result = await self._post(outgoing, number)
            else:
                result = await self._mail(outgoing)
            duration_ms = (time.perf_counter() - started) * 1000
            await self._record(outgoing, number, result, duration_ms)
        except Exception:
            log.exception("alert delivery %s failed unexpectedly", delivery_id)

    async def _record(
        self, outgoing: Outgoing, number: int, result: Result, duration_ms: float
    ) -> None:
        now = utcnow()
        outcome: dict[str, Any] = {
            "attempts": number,
            "claimed_until": None,
            "last_status_code": result.status_code,
            "last_error": result.error[:500] if result.error else None,
        }
        if result.delivered:
            outcome |= {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
        elif result.retryable and number < self._settings.max_attempts:
            delay = backoff_s(number, self._settings, result.retry_after_s)
            outcome |= {"next_attempt_at": now + dt.timedelta(seconds=delay)}
        else:
            outcome |= {"status": "failed", "next_attempt_at": None}
        delivery = outgoing.delivery
        async with session_scope(self._factory) as session:
            await alert_repository.record_attempt(
                session,
                delivery.id,
                attempt={
                    "tenant_id": delivery.tenant_id,
                    "number": number,
                    "status_code": result.status_code,
                    "error": outcome["last_error"],
                    "duration_ms": round(duration_ms, 3),
                },
                outcome=outcome,
            )
        if not result.delivered:
            log.info(
                "alert delivery %s (%s) attempt %d: %s",
                delivery.id,
                outgoing.alert.kind,
                number,
                outcome["last_error"],
            )

    def _secrets(self, outgoing: Outgoing) -> list[str]:
        channel = outgoing.channel
        if channel is None:
            secret = self._settings.platform_webhook_secret
            return [secret.get_secret_value()] if secret is not None else []
        found = [channel.secret] if channel.secret else []
        expires = channel.previous_secret_expires_at
        if channel.previous_secret and expires is not None and expires > utcnow():
            found.append(channel.previous_secret)
        return found

    async def _post(self, outgoing: Outgoing, number: int) -> Result:
        assert self._http is not None
        url = outgoing.delivery.target
        try:
            await check_url(url, allow_private=self._settings.allow_private_urls)
        except UnsafeUrl as error:
            return Result(False, error=f"refused to call {url}: {error}")
        secrets_ = self._secrets(outgoing)
        if not secrets_:
            return Result(False, error="no signing secret for this webhook")
        body = webhook_body(outgoing.alert, outgoing.tenant_name)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            ID_HEADER: str(outgoing.alert.id),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(secrets_, timestamp, body),
            "Apiary-Webhook-Kind": outgoing.alert.kind,
            "Apiary-Delivery-Id": str(outgoing.delivery.id),
            "Apiary-Delivery-Attempt": str(number),
        }
        try:
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                answer = b""
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= _BODY_KEPT:
                        break
        except httpx.TimeoutException:
            return Result(
                False, error=f"timed out after {self._settings.timeout_s:g} s", retryable=True
            )
        except httpx.HTTPError as error:
            return Result(False, error=f"{type(error).__name__}: {error}", retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return Result(True, status_code=status)
        text = answer[:_BODY_KEPT].decode("utf-8", "replace").strip()
        return Result(
            False,
            status_code=status,
            error=f"HTTP {status}" + (f": {text}" if text else ""),
            retryable=status >= 500 or status in (408, 429),
            retry_after_s=retry_after_s(response.headers.get("retry-after")),
        )

    async def _mail(self, outgoing: Outgoing) -> Result:
        settings = self._settings
        rendered = render(outgoing.alert, outgoing.tenant_name)
        message = EmailMessage()
        message["Subject"] = rendered.subject
        message["From"] = settings.smtp_from
        message["To"] = outgoing.delivery.target
        message["Date"] = email.utils.formatdate(usegmt=True)
        message["Message-ID"] = email.utils.make_msgid(domain="apiary")
        message["X-Apiary-Event-Id"] = str(outgoing.alert.id)
        message.set_content(rendered.text)
        try:
            await asyncio.to_thread(_send_mail, settings, message)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            return Result(
                False,
                status_code=codes[0] if codes else None,
                error=f"recipient refused: {error.recipients}",
                retryable=any(code < 500 for code in codes),
            )
        except smtplib.SMTPResponseException as error:
            reply = (
                error.smtp_error.decode("utf-8", "replace")
                if isinstance(error.smtp_error, bytes)
                else str(error.smtp_error)
            )
            return Result(
                False,
                status_code=error.smtp_code,
                error=f"SMTP {error.smtp_code}: {reply}",
                retryable=error.smtp_code < 500,
            )
        except (smtplib.SMTPException, OSError) as error:
            return Result(False, error=f"{type(error).__name__}: {error}", retryable=True)
        return Result(True, status_code=250)


def _send_mail(settings: AlertSettings, message: EmailMessage) -> None:
    """One message through the configured SMTP server (blocking: run in a thread)."""
    assert settings.smtp_host is not None
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
        smtp.send_message(message)
