"""The `apiary` command: serve, migrate, init, and admin and audit tasks.

Commands that print data print JSON on stdout, so scripts can read them; errors go to
stderr as one line and exit non-zero.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from apiary.authz.permissions import MEMBER_ROLES, Role
from apiary.config import ConfigError, Settings, load_settings
from apiary.kit import heap
from apiary.kit.files import lift_open_files_limit

app = typer.Typer(help="Apiary: multi-tenant LLM agent swarms.", no_args_is_help=True)
admin_app = typer.Typer(help="Platform administration.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
billing_app = typer.Typer(
    help="Billing: close a month into invoices, send them to Stripe.", no_args_is_help=True
)
app.add_typer(billing_app, name="billing")
encryption_app = typer.Typer(
    help="Encryption at rest: key-encryption keys, tenants' data keys, re-encryption.",
    no_args_is_help=True,
)
app.add_typer(encryption_app, name="encryption")
privacy_app = typer.Typer(
    help="Data subject rights: export, erase a person, delete a tenant.", no_args_is_help=True
)
app.add_typer(privacy_app, name="privacy")

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(runtime)` in a fresh runtime, turning domain errors into one line."""
    from apiary.errors import ApiaryError
    from apiary.runtime import Runtime

    async def main() -> T:
        runtime = Runtime.build(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    try:
        return asyncio.run(main())
    except ApiaryError as error:
        raise _fail(f"{error.name}: {error.detail}") from None


def _migrate(settings: Settings) -> None:
    from apiary import migrations

    if settings.is_sqlite:
        settings.prepare_data_dir()
    migrations.upgrade(settings.sqlalchemy_url)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [APIARY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [APIARY_PORT]")] = None,
) -> None:
    """Start the API server."""
    import uvicorn

    from apiary.http_protocol import ApiaryHttpProtocol
    from apiary.main import create_app
    from apiary.observability import error_reports
    from apiary.observability.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, batch=True)  # an access line per request
    error_reports.install(settings, component="api")
    lift_open_files_limit()  # a connection per sub-agent call in flight, and the clients'
    heap.start_trimming(settings.malloc_trim_s)
    bind_host, bind_port = host or settings.host, port or settings.port
    typer.echo(f"Apiary listening on http://{bind_host}:{bind_port}  (API docs: /docs)")
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,  # ours is written by the observability middleware
        proxy_headers=False,
        server_header=False,  # no banner naming the server software
        http=ApiaryHttpProtocol,  # uvicorn's httptools protocol, one write per small response
        timeout_keep_alive=settings.keep_alive_s,
    )


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="What the agent should do")],
    agent: Annotated[str, typer.Option(help="Agent name or id")],
    max_agents: Annotated[int | None, typer.Option(help="At most this many sub-agents")] = None,
    url: Annotated[
        str, typer.Option(envvar="APIARY_URL", help="Apiary's URL [APIARY_URL]")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="APIARY_API_KEY", help="API key [APIARY_API_KEY]", show_default=False),
    ] = None,
) -> None:
    """Run a task on an agent through the API, showing live progress, then the answer."""
    import httpx

    from apiary.run_client import RunFailed, run_task

    if not api_key:
        raise _fail("give --api-key or set APIARY_API_KEY", 2)

    async def main() -> int:
        headers = {"Authorization": f"Bearer {api_key}"}
        timeout = httpx.Timeout(30.0, read=None)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as http:
            return await run_task(
                http,
                task=task,
                agent=agent,
                max_agents=max_agents,
                echo=typer.echo,
                progress=lambda line: typer.echo(line, err=True),
            )

    try:
        status = asyncio.run(main())
    except RunFailed as error:
        raise _fail(str(error)) from None
    except httpx.HTTPError as error:
        raise _fail(f"cannot reach {url}: {type(error).__name__}") from None
    raise typer.Exit(status)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Executions run at once by this worker")] = 10,
    pool: Annotated[
        str,
        typer.Option(help="Celery pool: threads (one process, one event loop), prefork or solo"),
    ] = "threads",
    loglevel: Annotated[
        str | None, typer.Option(help="Celery log level (default: APIARY_LOG_LEVEL)")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="APIARY_WORKER_METRICS_PORT",
            help="Serve this worker's GET /metrics on this port (threads or solo pool)",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(envvar="APIARY_WORKER_METRICS_HOST", help="Address to serve it on")
    ] = "0.0.0.0",  # noqa: S104 - a scraper reaches the pod's address; the token guards it
) -> None:
    """Run executions from the Redis broker (Celery); needs APIARY_REDIS_URL."""
    from apiary.observability import error_reports
    from apiary.observability.logging import configure_logging
    from apiary.worker.celery_app import QUEUE
    from apiary.worker.process import make_celery, preload

    settings = _settings()
    if not settings.redis_url:
        raise _fail("apiary worker needs APIARY_REDIS_URL (the Celery broker)", 2)
    configure_logging(settings.log_level)
    error_reports.install(settings, component="worker")
    lift_open_files_limit()  # a connection per sub-agent call in flight
    heap.start_trimming(settings.malloc_trim_s)
    celery = make_celery(settings)
    preload()
    if metrics_port is not None:
        if pool == "prefork":
            raise _fail(
                "--metrics-port needs the threads or solo pool (prefork children's "
                "figures are not this process's)",
                2,
            )
        from apiary.observability.platform import PlatformMetrics
        from apiary.worker import process
        from apiary.worker.metrics import serve_metrics

        def process_figures() -> bytes:
            executions = process._process  # built with the pool, before the first task
            if executions is None:
                return b""
            return PlatformMetrics.process_exposition(executions.runtime)

        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        serve_metrics(metrics_host, metrics_port, token=token, extra=process_figures)
    celery.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
            # Celery's own level, or every task would log "succeeded" at INFO whatever
            # APIARY_LOG_LEVEL says (a line per execution, unbounded over a day).
            f"--loglevel={loglevel or settings.log_level}",
            f"--queues={QUEUE}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def migrate(
    downgrade: Annotated[
        str | None, typer.Option(help="Downgrade to this revision instead (e.g. base)")
    ] = None,
) -> None:
    """Upgrade the database to the newest schema (or downgrade with --downgrade)."""
    from apiary import migrations

    settings = _settings()
    if downgrade:
        migrations.downgrade(settings.sqlalchemy_url, downgrade)
    else:
        _migrate(settings)
    typer.echo("database is at " + (downgrade or "head"), err=True)


@billing_app.command("close")
def billing_close(
    period: Annotated[
        str | None,
        typer.Option(help="The month to close, YYYY-MM (default: last month, UTC)"),
    ] = None,
) -> None:
    """Issue every tenant's invoice for an ended month; safe to run again, and from several
    replicas at once (a schedule can run it on the 1st of each month). Prints JSON."""
    import re

    from apiary.billing.service import billing_service, last_period

    settings = _settings()
    period = period or last_period()
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise _fail(f"--period: {period!r} is not a month as YYYY-MM", 2)
    result = _run(
        settings,
        lambda runtime: billing_service.close_period(
            runtime.session_factory, period, settings.billing
        ),
    )
    _print_json(result.model_dump())


@billing_app.command("sync")
def billing_sync() -> None:
    """Send the invoices still pending to Stripe (a close does this itself; run it when
    Stripe was away then) and put tenants on their plan's Stripe price. Prints JSON."""
    from apiary.billing.payments import payment_service

    settings = _settings()
    if not settings.billing.stripe.enabled:
        raise _fail(
            "Stripe is not configured (APIARY_BILLING__STRIPE__API_KEY): billing is invoice "
            "only, there is nothing to sync",
            2,
        )
    result = _run(
        settings,
        lambda runtime: payment_service.sync(runtime.session_factory, settings.billing.stripe),
    )
    assert result is not None
    _print_json(result.model_dump())
    if result.errors:
        raise typer.Exit(1)  # a schedule sees it failed, and runs it again


@app.command()
def init() -> None:
    """Migrate, and on the first run create the super admin, printing its password once."""
    settings = _settings()
    _migrate(settings)
    from apiary.bootstrap import ensure_super_admin

    created = _run(settings, lambda runtime: ensure_super_admin(runtime))
    if created is None:
        typer.echo("Super admin already exists; sign in with your saved password.")
        return
    email, password = created
    # Printed to the terminal once and never logged: it exists nowhere else in clear.
    typer.echo(
        "\n  First run: a super admin was created. Save this password; it is not shown again.\n"
        f"    email:    {email}\n    password: {password}\n"
    )


@admin_app.command("create-tenant")
def create_tenant(
    name: Annotated[str, typer.Argument(help="Tenant name, unique")],
    admin_email: Annotated[str, typer.Option(help="Email of the tenant's first admin")],
    admin_password: Annotated[
        str | None, typer.Option(help="Password for a new admin user; default: generated")
    ] = None,
    plan: Annotated[str, typer.Option(help="Plan name")] = "free",
) -> None:
    """Create a tenant and its first admin; print JSON with their ids."""
    from apiary.bootstrap import cli_create_tenant

    settings = _settings()
    try:
        created = _run(
            settings,
            lambda runtime: cli_create_tenant(
                runtime, name=name, admin_email=admin_email, password=admin_password, plan=plan
            ),
        )
    except ValueError as error:
        raise _fail(str(error), 2) from None
    _print_json(created)


@admin_app.command("create-api-key")
def create_api_key(
    tenant: Annotated[str, typer.Option(help="Tenant name or id")],
    role: Annotated[str, typer.Option(help="One of: " + ", ".join(sorted(MEMBER_ROLES)))],
    name: Annotated[str, typer.Option(help="A label for the key")] = "cli",
) -> None:
    """Create an API key in a tenant; print JSON with the key (shown only this once)."""
    from apiary.bootstrap import cli_create_api_key

    if role not in MEMBER_ROLES:
        raise _fail(f"--role: must be one of {', '.join(sorted(MEMBER_ROLES))}", 2)
    settings = _settings()
    created = _run(
        settings,
        lambda runtime: cli_create_api_key(runtime, tenant=tenant, role=Role(role), name=name),
    )
    _print_json(created)


@app.command()
def openapi(
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the OpenAPI spec (JSON); the dashboard's typed client is generated from it."""
    from apiary.main import create_app

    # The spec depends on code only, not on configuration: defaults keep it reproducible.
    spec = create_app(Settings()).openapi()
    text = orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)


@app.command("graphql-schema")
def graphql_schema(
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL) /graphql serves; docs/schema.graphql is this."""
    from apiary.graphql.schema import schema

    text = schema.as_str() + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as file:
            file.write(text)


@audit_app.command("verify")
def audit_verify(
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            help="Check an archive written by `apiary audit archive` instead of the database",
        ),
    ] = None,
    anchors: Annotated[
        Path | None,
        typer.Option(
            "--anchors",
            help="Also check the heads `apiary audit anchor` recorded (a rewrite that "
            "re-hashed the whole chain is caught here)",
        ),
    ] = None,
) -> None:
    """Check the audit log's hash chain; exit 1 and name the first broken entry if tampered."""
    from apiary.audit.service import ChainReport, audit_service, verify_archive
    from apiary.db import session_scope

    recorded: list[dict[str, Any]] = []
    if anchors is not None:
        try:
            recorded = [
                orjson.loads(line) for line in anchors.read_bytes().splitlines() if line.strip()
            ]
        except OSError as error:
            raise _fail(f"cannot read {anchors}: {error.strerror}", 2) from None
        except orjson.JSONDecodeError as error:
            raise _fail(f"{anchors} is not a file of anchors: {error}", 2) from None

    async def verify(runtime: Any) -> ChainReport:
        async with session_scope(runtime.session_factory) as session:
            report = await audit_service.verify(session)
            if report.ok and recorded:
                return await audit_service.check_anchors(session, recorded)
            return report

    if archive is not None:
        try:
            with archive.open("rb") as lines:
                report = verify_archive(lines)
        except OSError as error:
            raise _fail(f"cannot read {archive}: {error.strerror}", 2) from None
    else:
        report = _run(_settings(), verify)
    _print_json(report.__dict__)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file to append it to")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Also POST it as JSON here (APIARY_AUDIT__ANCHOR_TOKEN as a bearer)"),
    ] = None,
) -> None:
    """Append the audit chain's head (time, entries, hash) to a file kept off the database's
    storage, or post it to a URL; run it on a schedule (cron, a Kubernetes CronJob), or let
    the API do it (APIARY_AUDIT__ANCHOR_URL / __ANCHOR_FILE). `apiary audit verify --anchors
    FILE` then proves the log still holds what each anchor saw."""
    import httpx

    from apiary.audit.anchoring import send_anchor
    from apiary.audit.service import audit_service
    from apiary.db import session_scope

    if output is None and url is None:
        raise _fail("give --output FILE, --url URL, or both", 2)
    if url is not None and not url.startswith(("http://", "https://")):
        raise _fail(f"--url must start with http:// or https://, not {url!r}", 2)
    settings = _settings()
    token = settings.audit.anchor_token

    async def head(runtime: Any) -> dict[str, Any]:
        async with session_scope(runtime.session_factory) as session:
            anchor = await audit_service.anchor(session)
        await send_anchor(
            anchor, url=url, file=output, token=token.get_secret_value() if token else None
        )
        return anchor

    try:
        anchor = _run(settings, head)
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror}", 2) from None
    except httpx.HTTPError as error:
        # Named without its query, which may carry a credential.
        where = str(url).split("?", 1)[0]
        why = (
            f"answered {error.response.status_code}"
            if isinstance(error, httpx.HTTPStatusError)
            else type(error).__name__
        )
        raise _fail(f"cannot post the anchor to {where}: {why}", 1) from None
    _print_json(anchor)


@audit_app.command("archive")
def audit_archive(
    output: Annotated[Path, typer.Option("--output", "-o", help="The JSON Lines file to write")],
    before: Annotated[
        datetime | None,
        typer.Option(help="Only entries created before this time (ISO 8601, UTC if no zone)"),
    ] = None,
) -> None:
    """Write the audit log (or its entries before a time) as JSON Lines with the chain's
    hashes: an archive that `apiary audit verify --archive` checks on its own."""
    from apiary.audit.service import audit_service
    from apiary.db import session_scope

    cutoff = before.replace(tzinfo=UTC) if before and before.tzinfo is None else before

    async def write(runtime: Any) -> int:
        async with session_scope(runtime.session_factory) as session:
            with output.open("wb") as out:
                return await audit_service.archive(session, out, before=cutoff)

    try:
        written = _run(_settings(), write)
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror}", 2) from None
    _print_json({"entries": written, "output": str(output)})


@audit_app.command("prune")
def audit_prune(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The archive to write (must not exist), or a folder to write "
            "audit-before-<time>.jsonl in (as a scheduled job does)",
        ),
    ],
    before: Annotated[
        datetime | None,
        typer.Option(
            help="Prune entries created before this time (ISO 8601, UTC if no zone); "
            "default: now minus APIARY_AUDIT__RETENTION_DAYS. Never later than that."
        ),
    ] = None,
) -> None:
    """Archive the entries past their retention to a new JSON Lines file (as `apiary audit
    archive` writes) and remove them from the database; the table's chain then starts at
    the last one archived, and the archive chains to the one before. Run it on a schedule
    and keep the archives (seven years by default) where the database's owner cannot
    rewrite them."""
    import os
    from datetime import timedelta

    from apiary.audit.service import PRUNE_FLOOR_DAYS, PruneReport, audit_service
    from apiary.db import session_scope

    settings = _settings()
    now = datetime.now(UTC)
    retained = now - timedelta(days=settings.audit.retention_days)
    cutoff = before.replace(tzinfo=UTC) if before and before.tzinfo is None else before
    if cutoff is None:
        cutoff = retained
    elif cutoff > retained:
        raise _fail(
            f"--before {cutoff.isoformat()} would prune entries younger than the retention "
            f"({settings.audit.retention_days} days, APIARY_AUDIT__RETENTION_DAYS): use "
            f"{retained.isoformat(timespec='seconds')} or earlier",
            2,
        )
    if not settings.is_sqlite and cutoff > now - timedelta(days=PRUNE_FLOOR_DAYS):
        raise _fail(
            f"PostgreSQL keeps audit entries for at least {PRUNE_FLOOR_DAYS} days (the "
            "append-only trigger of migration 0018); a shorter retention needs that trigger "
            "replaced by the table's owner (docs/security.md)",
            2,
        )

    if output.is_dir():
        output = output / f"audit-before-{cutoff.strftime('%Y%m%dT%H%M%SZ')}.jsonl"

    async def prune(runtime: Any) -> PruneReport:
        async with session_scope(runtime.session_factory) as session:
            with output.open("xb") as out:
                report = await audit_service.prune(session, out, before=cutoff)
                out.flush()
                os.fsync(out.fileno())  # the archive is on disk before the rows go
            return report

    try:
        report = _run(settings, prune)
    except FileExistsError:
        raise _fail(f"{output} exists: each prune writes a new archive", 2) from None
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror}", 2) from None
    if not report.ok or report.archived == 0:
        output.unlink(missing_ok=True)
    _print_json({**report.__dict__, "before": report.before.isoformat(), "output": str(output)})
    if not report.ok:
        raise typer.Exit(1)


@encryption_app.command("new-kek")
def encryption_new_kek(
    kid: Annotated[str, typer.Argument(help="The new KEK's id, e.g. 2026-12")],
) -> None:
    """Print a new random KEK as `kid:base64`, the form APIARY_ENCRYPTION__KEK takes."""
    from pydantic import SecretStr, ValidationError

    from apiary.config import EncryptionSettings
    from apiary.crypto.keyring import random_kek

    value = f"{kid}:{random_kek()}"
    try:
        EncryptionSettings(kek=SecretStr(value))
    except ValidationError as error:
        raise _fail(error.errors()[0]["msg"], 2) from None
    typer.echo(value)


@encryption_app.command("status")
def encryption_status() -> None:
    """Which KEKs wrap the tenants' data keys, and whether this configuration holds them."""

    async def status(runtime: Any) -> dict[str, Any]:
        from apiary.crypto.repository import data_key_repository

        async with runtime.session_factory() as session:
            counts = await data_key_repository.kek_counts(session)
        missing = await runtime.encryption.missing_keks()
        return {
            "enabled": runtime.encryption.enabled,
            "data_keys_by_kek": counts,
            "missing_keks": sorted(missing),
        }

    _print_json(_run(_settings(), status))


@encryption_app.command("rotate")
def encryption_rotate(
    data_keys: Annotated[
        bool,
        typer.Option(
            "--data-keys",
            help="Also give every tenant a new data key version for new data (older data "
            "still reads; `apiary encryption reencrypt` rewrites it)",
        ),
    ] = False,
) -> None:
    """Re-wrap every tenant's data key under the KEK that now wraps new ones
    (APIARY_ENCRYPTION__KEK, or the Key Vault key's current version). Safe while the
    service runs: data is not re-encrypted. Then the previous KEKs can be removed."""

    async def rotate(runtime: Any) -> dict[str, Any]:
        report = await runtime.encryption.rewrap()
        result: dict[str, Any] = {
            "rewrapped": report.rewrapped,
            "unchanged": report.unchanged,
            "data_keys_by_kek": report.kek_ids,
        }
        if data_keys:
            result["new_data_key_versions"] = await runtime.encryption.rotate_data_keys()
        return result

    _print_json(_run(_settings(), rotate))


@encryption_app.command("reencrypt")
def encryption_reencrypt() -> None:
    """Encrypt what is stored as plaintext (written before encryption was configured) or
    under an older data key version: documents and conversation memory. Safe to run again,
    and while the service runs."""

    async def reencrypt(runtime: Any) -> dict[str, int]:
        from apiary.crypto.errors import EncryptionKeyUnavailable
        from apiary.knowledge.service import reencrypt_documents
        from apiary.memory.encrypted_store import (
            reencrypt_database_threads,
            reencrypt_redis_threads,
        )

        if not runtime.encryption.enabled:
            raise EncryptionKeyUnavailable(
                "encryption at rest is not configured: set APIARY_ENCRYPTION__KEK or "
                "APIARY_ENCRYPTION__KEY_VAULT_KEY_ID"
            )
        keyring = runtime.encryption
        result = {
            "documents": await reencrypt_documents(runtime.session_factory, keyring),
            "memory_rows": await reencrypt_database_threads(runtime.session_factory, keyring),
        }
        if runtime.redis is not None:
            result["memory_redis_values"] = await reencrypt_redis_threads(runtime.redis, keyring)
        return result

    _print_json(_run(_settings(), reencrypt))


@privacy_app.command("export")
def privacy_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The zip file to write")],
    tenant: Annotated[
        str | None, typer.Option(help="Everything of this tenant (name or id)")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Everything of this person (email or id)")
    ] = None,
) -> None:
    """Write a tenant's or a person's data as a zip: JSON Lines per table, conversation
    memory, the original documents. In embedded mode (Qdrant in a folder) the server need
    not stop: an export does not open the vector store."""
    from apiary.bootstrap import cli_export

    if (tenant is None) == (user is None):
        raise _fail("give exactly one of --tenant or --user", 2)
    settings = _settings()

    async def write(runtime: Any) -> str:
        with output.open("wb") as out:
            return await cli_export(runtime, tenant=tenant, user=user, out=out)

    try:
        name = _run(settings, write)
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror}", 2) from None
    _print_json({"archive": name, "output": str(output), "bytes": output.stat().st_size})


@privacy_app.command("erase-user")
def privacy_erase_user(
    user: Annotated[str, typer.Argument(help="The person's email or id")],
) -> None:
    """Erase a person: email, name, password, OIDC subject, sign-ins, memberships gone, keys
    they made revoked; the audit log keeps their id, now an anonymous account. Print the
    report as JSON."""
    from apiary.bootstrap import cli_erase_user

    _print_json(_run(_settings(), lambda runtime: cli_erase_user(runtime, user=user)))


@privacy_app.command("delete-tenant")
def privacy_delete_tenant(
    tenant: Annotated[str, typer.Argument(help="The tenant's name or id")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone")] = False,
) -> None:
    """Delete a tenant: every row, its vectors, cache entries, counters and memory; members
    of no other tenant are erased; its audit entries are kept. Print what was removed as
    JSON. Embedded (Qdrant in a folder), stop the server first or delete through the API:
    one process at a time may open that folder."""
    from apiary.bootstrap import cli_delete_tenant

    if not yes:
        raise _fail(f"deleting tenant {tenant!r} cannot be undone: add --yes to confirm", 2)
    _print_json(_run(_settings(), lambda runtime: cli_delete_tenant(runtime, tenant=tenant)))


def main() -> None:
    try:
        app()
    except ConfigError as error:  # raised lazily by a command's settings
        typer.echo(str(error), err=True)
        sys.exit(2)
