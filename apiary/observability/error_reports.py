"""Error reports to Sentry when `APIARY_SENTRY_DSN` is set, for `apiary serve` and
`apiary worker`, with every secret scrubbed before an event leaves the process.

Sentry's own integrations do the capturing: an unhandled error in a route is logged by the
500 handler (`log.exception`), which the logging integration turns into an event; a Celery
task that raises is captured by the Celery integration. Two layers keep secrets out:
Sentry's `EventScrubber` blanks values under sensitive names (its denylist plus ours) at any
depth, and `before_send` replaces every secret this process knows the value of (each
`SecretStr` setting, provider keys, the JWT signing key, passwords in the database and
Redis URLs) and every credential-shaped string (bearer tokens, API keys, JWTs) wherever it
appears: messages, exception values, frame variables, breadcrumbs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from apiary.observability.logging import redact

if TYPE_CHECKING:
    from apiary.config import Settings

__all__ = ["FILTERED", "install", "scrub_event", "secret_values"]

log = logging.getLogger("apiary.error_reports")

FILTERED = "[Filtered]"
# Names whose values are blanked wherever they appear, beside Sentry's own denylist.
EXTRA_DENYLIST = [
    "jwt_secret",
    "jwt_previous_secrets",
    "signing_key",
    "metrics_token",
    "qdrant_api_key",
    "sentry_dsn",
    "dsn",
    "access_token",
    "refresh_token",
    "apiary_refresh",  # the browser's refresh token cookie
    "code_verifier",  # with an authorization code, it signs someone in
    "client_secret",
    "x-api-key",
    "api-key",
    "key_hash",
    "headers",  # OTLP export headers carry a collector's token
]
# Shorter values are too likely to occur by chance in ordinary text to be replaced.
_MIN_SECRET_CHARS = 8


def _secrets_in(value: object) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_in(item)


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold, longest first (so a secret containing another
    is replaced whole)."""
    found = set(_secrets_in(settings))
    # Configured, or generated into the data dir: made 0700 first, as the runtime makes it
    # (reading the key creates it, and its parents with the umask's mode).
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    found.add(settings.signing_key)
    for url in (settings.database_url, settings.redis_url, settings.qdrant_url):
        password = urlsplit(url).password if url else None
        if password:
            found.add(password)
    return sorted((s for s in found if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, FILTERED)
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, secrets) for item in value]
    return value


def scrub_event(event: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """The event with every known secret value and credential-shaped string replaced."""
    scrubbed: dict[str, Any] = _scrub(event, secrets)
    request = scrubbed.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        request.pop("data", None)  # request bodies: prompts and whatever a client sent
    return scrubbed


def install(settings: Settings, *, component: str) -> bool:
    """Start reporting errors when a DSN is configured; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    secrets = secret_values(settings)

    def before_send(event: Any, hint: Any) -> Any:
        return scrub_event(event, secrets)

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        server_name=component,
        # send_default_pii stays at its default (off): no client addresses, users or cookies.
        include_local_variables=True,  # scrubbed below: worth it to debug a crash
        event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + EXTRA_DENYLIST, recursive=True),
        before_send=before_send,
        before_breadcrumb=lambda crumb, hint: _scrub(crumb, secrets),
        traces_sample_rate=None,  # traces go to OpenTelemetry; Sentry gets errors only
    )
    sentry_sdk.set_tag("component", component)
    log.info("error reports to Sentry on (%s)", component)
    return True
