"""Settings: environment variables prefixed `APIARY_`, over an optional YAML file.

The YAML file named by `APIARY_CONFIG` holds structured settings (providers, routes, prices
in later modules); environment variables win over it. Embedded defaults need nothing set:
SQLite and secrets live in the data dir. Production switches by URL alone
(`APIARY_DATABASE_URL=postgresql+asyncpg://…`, `APIARY_REDIS_URL=redis://…`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from apiary.gateway.config import GatewayConfig, PriceConfig, ProviderConfig, RouteConfig

if TYPE_CHECKING:
    from apiary.auth.tokens import SigningKeys


def _split_commas(value: Any) -> Any:
    """An environment variable's comma-separated value as a list; a YAML list passes as is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _http_url(value: str | None) -> str | None:
    """An http(s) URL, or None when unset or left empty (as a deployment template does)."""
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


# A list setting given in one environment variable, comma-separated.
CommaSeparated = BeforeValidator(_split_commas)
# An optional setting naming an http(s) URL.
HttpUrl = Annotated[str | None, AfterValidator(_http_url)]

# The roles a tenant membership can hold: an identity provider never makes a super admin.
MemberRole = Literal["tenant_admin", "developer", "viewer", "billing_admin"]


class ConfigError(Exception):
    """Configuration that cannot start Apiary; its message is one line naming the bad key."""


class OIDCSettings(BaseSettings):
    """Sign-in with an external OpenID Connect issuer (Azure AD style)."""

    model_config = SettingsConfigDict(extra="forbid")

    issuer: str
    audience: str
    jwks_url: str | None = None  # default: discovered from the issuer's metadata
    tenant_claim: str = "tid"  # matched against a tenant's `oidc_tenant_id`
    default_role: MemberRole = "viewer"  # role given to a user provisioned on first sign-in
    allowed_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    # The dashboard's authorization code flow: Apiary's server redeems the code at the
    # issuer's token endpoint (discovered unless set), with this secret when the app is
    # registered as a confidential ("Web") client; without one, as a public client (PKCE).
    client_secret: SecretStr | None = None
    token_endpoint: str | None = None
    scopes: str = "openid email profile"
    # Roles from the IdP: a claim value (an Azure AD group object id in `groups`, or an app
    # role's value in `roles`) -> Apiary role, applied at every OIDC sign-in. `tenant_role_maps`
    # holds maps per IdP tenant (its `tid`), whose entries win over `role_map`'s. With a map
    # in force, a user matching several entries gets the highest role, one matching none gets
    # `default_role`, or is refused when `require_mapped_role` is set.
    role_claims: list[str] = Field(default_factory=lambda: ["groups", "roles"])
    role_map: dict[str, MemberRole] = Field(default_factory=dict)
    tenant_role_maps: dict[str, dict[str, MemberRole]] = Field(default_factory=dict)
    require_mapped_role: bool = False

    def role_map_for(self, idp_tenant: str | None) -> dict[str, MemberRole]:
        """The claim value -> role map in force for users of `idp_tenant` (empty: none)."""
        specific = self.tenant_role_maps.get(idp_tenant, {}) if idp_tenant else {}
        return {**self.role_map, **specific}

    @field_validator("allowed_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg.lower() == "none" or alg.upper().startswith("HS")]
        if bad:
            raise ValueError(f"only asymmetric algorithms are allowed, not {', '.join(bad)}")
        return value


class CacheSettings(BaseSettings):
    """The gateway's response cache (see apiary/gateway/cache.py and semantic_cache.py)."""

    model_config = SettingsConfigDict(extra="forbid")

    ttl_s: int = Field(default=3600, ge=1)
    max_entries: int = Field(default=10_000, ge=1)
    semantic: bool = False  # also answer requests that mean the same (MiniLM embeddings)
    semantic_threshold: float = Field(default=0.95, gt=0, le=1)


class KnowledgeSettings(BaseSettings):
    """Knowledge bases: uploads, ingestion and the vector store (see apiary/knowledge/)."""

    model_config = SettingsConfigDict(extra="forbid")

    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)  # larger uploads get 413
    embed_batch_size: int = Field(default=64, ge=1, le=2048)  # chunks embedded per call
    ingest_workers: int = Field(default=1, ge=1, le=16)  # in-process ingestion jobs at once
    # How long one document's embedding may wait in all on rate limits (the tenant's RPM,
    # a provider's 429) before it fails, naming the limit.
    embed_rate_limit_wait_s: float = Field(default=600.0, ge=0)
    # What reading one document may cost (apiary/knowledge/extract.py); past a cap it fails.
    max_inflated_bytes: int = Field(default=64 * 1024 * 1024, ge=1)  # zip entries, PDF streams
    max_pdf_stream_bytes: int = Field(default=16 * 1024 * 1024, ge=1)  # one stream, decoded
    max_compression_ratio: int = Field(default=100, ge=1)  # per zip entry over 1 MiB
    max_zip_entries: int = Field(default=1_000, ge=1)
    max_elements: int = Field(default=500_000, ge=1)  # DOCX XML elements, PDF tokens, JSON values
    max_html_tags: int = Field(default=100_000, ge=1)
    max_pdf_pages: int = Field(default=2_000, ge=1)
    max_extracted_chars: int = Field(default=20_000_000, ge=1)


class SwarmSettings(BaseSettings):
    """The swarm engine (see apiary/swarm/) and its workers (apiary/worker/)."""

    model_config = SettingsConfigDict(extra="forbid")

    tenant_concurrency: int = Field(default=100, ge=1)  # a tenant's running sub-agents, all told
    max_steps: int = Field(default=6, ge=1, le=50)  # model calls per sub-agent's tool loop
    memory_token_limit: int = Field(default=1500, ge=100)  # thread memory kept verbatim
    # With Redis: a thread with no new turn for this long is forgotten. None: kept forever.
    memory_ttl_s: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)  # per model call; None: the model's
    # Celery: a message not acknowledged within this time is redelivered to another
    # worker; set it above your longest execution deadline.
    visibility_timeout_s: int = Field(default=3600, ge=1)
    # A run renews its lease on an execution every third of this; a run that dies without
    # releasing it holds the execution this long before another worker may resume it.
    lease_s: float = Field(default=30.0, ge=1)
    # Celery: an unfinished execution no run has held for this long, and that no message in
    # the broker names (lost with Redis), is published again; the API looks this often.
    requeue_after_s: float = Field(default=120.0, gt=0)
    requeue_interval_s: float = Field(default=60.0, gt=0)


class ResponsesSettings(BaseSettings):
    """Stored answers of the Responses API (`/v1/responses`, see apiary/responses/)."""

    model_config = SettingsConfigDict(extra="forbid")

    # A stored response is served, and continued with previous_response_id, this long
    # (OpenAI keeps them 30 days); then the sweep deletes it.
    retention_days: float = Field(default=30, gt=0)
    sweep_interval_s: float = Field(default=3600, gt=0)  # how often each API process sweeps
    # Saved responses are written in batches this often (this process serves them
    # meanwhile; another replica looks again after this long when it misses one).
    write_interval_s: float = Field(default=0.2, gt=0, le=5)


class UsageSettings(BaseSettings):
    """The ledger's upkeep (apiary/usage/): raw-row retention and monthly partitions."""

    model_config = SettingsConfigDict(extra="forbid")

    # Raw ledger rows are kept this long unless the tenant's plan says otherwise
    # (plans.ledger_retention_days); the hourly and daily rollups are kept for good.
    ledger_retention_days: int = Field(default=90, ge=1)
    # How often each API process creates the coming months' partitions (PostgreSQL) and
    # drops or deletes raw rows past retention.
    maintain_interval_s: float = Field(default=3600, gt=0)


class StripeSettings(BaseSettings):
    """Payments through Stripe (apiary/billing/payments.py); without an API key billing is
    "invoice only" and nothing calls Stripe."""

    model_config = SettingsConfigDict(extra="forbid")

    api_key: SecretStr | None = None  # sk_live_... / sk_test_... (or a restricted key)
    # The signing secret of the webhook endpoint registered in Stripe (whsec_...).
    webhook_secret: SecretStr | None = None
    # Where the API is; tests point it at a local server speaking Stripe's wire format.
    api_base: str = "https://api.stripe.com"
    # How old a webhook's signed timestamp may be (replayed deliveries are refused).
    webhook_tolerance_s: int = Field(default=300, ge=1, le=86_400)
    # Retries of one call by the SDK (connection errors, 409, 5xx), then the sync gives up
    # until the next run.
    max_network_retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=30, gt=0, le=300)
    # Invoices (and subscriptions) are sent to the customer to pay within this many days.
    days_until_due: int = Field(default=30, ge=1, le=365)

    @field_validator("api_base")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def enabled(self) -> bool:
        return self.api_key is not None


class BillingSettings(BaseSettings):
    """Invoices (see apiary/billing/): tax, numbering and the currencies billed in."""

    model_config = SettingsConfigDict(extra="forbid")

    tax_rate: Decimal = Field(default=Decimal(0), ge=0, le=1)  # 0.2 adds 20 % to invoices
    invoice_prefix: str = Field(default="INV", pattern=r"^[A-Z0-9-]{1,20}$")
    issuer: str = Field(default="Apiary", min_length=1, max_length=200)  # on the PDF
    # 1 USD in each currency a tenant may be invoiced in (plans are priced in USD); the rate
    # is fixed on each invoice when its period closes.
    usd_rates: dict[str, Decimal] = Field(default_factory=lambda: {"USD": Decimal(1)})
    stripe: StripeSettings = Field(default_factory=StripeSettings)


class AlertSettings(BaseSettings):
    """Alerts that reach people (see apiary/alerts/): signed webhooks and e-mail."""

    model_config = SettingsConfigDict(extra="forbid")

    # E-mail through an SMTP server; without a host, e-mail channels are kept but nothing is
    # sent from this process (another replica configured with one sends them).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Apiary <apiary@localhost>"
    smtp_starttls: bool = True  # upgrade the connection with STARTTLS before signing in
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Webhook URLs naming a private, loopback or link-local address (or a name resolving to
    # one) are refused, so a tenant cannot make Apiary call into its own network (SSRF).
    allow_private_urls: bool = False
    timeout_s: float = Field(default=10.0, gt=0, le=120)  # one webhook attempt
    max_attempts: int = Field(default=8, ge=1, le=50)  # then the delivery is given up
    retry_base_s: float = Field(default=30.0, gt=0)  # first retry; doubling after each
    retry_max_s: float = Field(default=3600.0, gt=0)  # the longest wait between attempts
    poll_interval_s: float = Field(default=5.0, gt=0, le=600)  # looking for due deliveries
    concurrency: int = Field(default=10, ge=1, le=1000)  # deliveries in flight per process
    queue_size: int = Field(default=1000, ge=1)  # alerts raised off a transaction, waiting
    # Platform alerts (a provider's breaker opening) go here: the super admin's channels.
    platform_webhook_url: HttpUrl = None
    platform_webhook_secret: SecretStr | None = None
    platform_emails: Annotated[list[str], NoDecode, CommaSeparated] = Field(default_factory=list)
    # A provider's breaker opening is told once per provider in this many seconds.
    breaker_period_s: int = Field(default=3600, ge=60)

    @model_validator(mode="after")
    def _platform_webhook_signed(self) -> AlertSettings:
        if self.platform_webhook_url and self.platform_webhook_secret is None:
            raise ValueError(
                "platform_webhook_secret is required with platform_webhook_url (the receiver "
                "verifies each alert's signature with it)"
            )
        return self


_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _parse_kek(value: str) -> tuple[str, bytes]:
    kid, sep, encoded = value.strip().partition(":")
    if not sep or not _KID.match(kid):
        raise ValueError(
            "a KEK is `kid:base64-of-32-bytes`, the kid letters, digits, '.', '_' or '-' "
            "(e.g. `2026-12:$(openssl rand -base64 32)`)"
        )
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError(f"KEK {kid!r}: the key is not valid base64") from None
    if len(key) != 32:
        raise ValueError(f"KEK {kid!r}: the key must be 32 bytes (AES-256), not {len(key)}")
    return kid, key


class EncryptionSettings(BaseSettings):
    """Encryption at rest of documents and conversation memory (see apiary/crypto/).

    Configured by a key-encryption key from the environment or an Azure Key Vault key;
    without either, new data is stored as it is."""

    model_config = SettingsConfigDict(extra="forbid")

    # The KEK that wraps new data keys: `kid:base64 of 32 random bytes`.
    kek: SecretStr | None = None
    # KEKs a rotation replaced, comma-separated: still unwrap until `apiary encryption
    # rotate` has re-wrapped every data key under the new one; then remove them.
    previous_keks: Annotated[list[SecretStr], NoDecode, CommaSeparated] = Field(
        default_factory=list
    )
    # An Azure Key Vault key (https://<vault>.vault.azure.net/keys/<name>[/<version>]) that
    # wraps new data keys instead; the environment KEKs above still unwrap.
    key_vault_key_id: str | None = None
    # How long a process keeps using a tenant's data key version before looking for a newer
    # one (after `apiary encryption rotate --data-keys`).
    current_key_ttl_s: float = Field(default=300.0, gt=0)

    @field_validator("kek")
    @classmethod
    def _valid_kek(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _parse_kek(value.get_secret_value())
        return value

    @field_validator("previous_keks")
    @classmethod
    def _valid_keks(cls, values: list[SecretStr]) -> list[SecretStr]:
        for value in values:
            _parse_kek(value.get_secret_value())
        return values

    @field_validator("key_vault_key_id")
    @classmethod
    def _key_vault_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = value.rstrip("/").split("/")
        if not value.startswith("https://") or len(parts) not in (5, 6) or parts[3] != "keys":
            raise ValueError(
                "must be a Key Vault key identifier, "
                "https://<vault>.vault.azure.net/keys/<name>[/<version>]"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct_and_active(self) -> EncryptionSettings:
        if self.previous_keks and self.kek is None and self.key_vault_key_id is None:
            raise ValueError(
                "previous_keks only unwrap: set kek (or key_vault_key_id) to the KEK that "
                "wraps new data keys"
            )
        kids = list(self.local_keys())
        count = (self.kek is not None) + len(self.previous_keks)
        if len(kids) != count:
            raise ValueError("two KEKs have the same kid")
        return self

    @property
    def enabled(self) -> bool:
        return self.kek is not None or self.key_vault_key_id is not None

    def local_keys(self) -> dict[str, bytes]:
        """The environment KEKs by kid, the one that wraps first."""
        values = ([self.kek] if self.kek is not None else []) + self.previous_keks
        return dict(_parse_kek(value.get_secret_value()) for value in values)


class OTelSettings(BaseSettings):
    """OpenTelemetry traces (see apiary/observability/tracing.py); off without an endpoint."""

    model_config = SettingsConfigDict(extra="forbid")

    # The collector's OTLP/HTTP base URL (http://collector:4318) or its /v1/traces URL.
    endpoint: str | None = None
    # Share of traces kept, decided where a trace starts and followed by its children.
    sampling_ratio: float = Field(default=1.0, ge=0, le=1)
    service_name: str = "apiary"
    headers: SecretStr | None = None  # `key=value,...` sent with each export (an API token)

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if not value:  # set but empty, as a deployment template leaves it: tracing off
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (OTLP over HTTP)")
        return value


class AuditSettings(BaseSettings):
    """The audit log's retention (see `apiary audit prune` and docs/security.md)."""

    model_config = SettingsConfigDict(extra="forbid")

    # Entries are kept this long, then archived and removed by `apiary audit prune`: seven
    # years by default, as the plan's compliance controls ask. On PostgreSQL the table's
    # trigger refuses to remove younger entries than PRUNE_FLOOR_DAYS whatever this says.
    retention_days: int = Field(default=2557, ge=1)
    # Anchors of the chain's head, taken every anchor_interval_s by each API process: posted
    # as JSON to anchor_url (with anchor_token as a bearer token) and/or appended to
    # anchor_file, somewhere the database's owner cannot rewrite (docs/security.md).
    anchor_url: HttpUrl = None
    anchor_token: SecretStr | None = None
    anchor_file: Path | None = None
    anchor_interval_s: float = Field(default=3600, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APIARY_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("./var")
    database_url: str | None = None  # default: SQLite in the data dir
    redis_url: str | None = None  # default: in-process cache, limits and pub/sub
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Longer than any balancer's idle timeout in front of us (ingress-nginx keeps upstream
    # connections 60 s): when the server closes an idle connection first, a request the
    # balancer sends on it at that moment gets no answer (a 502 for its client).
    keep_alive_s: int = Field(default=75, ge=1, le=3600)
    # `apiary serve` and `apiary worker` collect cyclic garbage and hand freed heap pages back
    # to the system this often (apiary/kit/heap.py: otherwise RSS creeps up); 0 turns it off.
    malloc_trim_s: float = Field(default=60.0, ge=0, le=86_400)
    environment: Literal["development", "production", "test"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    jwt_secret: SecretStr | None = None  # default: generated once into the data dir
    # Secrets a rotation replaced, comma-separated: access tokens they signed still verify
    # until they expire (keep them one access-token lifetime, then drop them).
    jwt_previous_secrets: Annotated[list[SecretStr], NoDecode, CommaSeparated] = Field(
        default_factory=list
    )
    # An EC P-256 private key (PEM): access tokens are then signed with ES256 and its public
    # key is published at /.well-known/jwks.json for other services; the secrets above
    # still verify the HS256 tokens signed before. Keys it replaced: their PEMs (private or
    # public), comma-separated, kept one access-token lifetime.
    jwt_private_key: SecretStr | None = None
    jwt_previous_public_keys: Annotated[list[str], NoDecode, CommaSeparated] = Field(
        default_factory=list
    )
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300)

    # Sign-in throttling (apiary/auth/throttle.py): free guesses per (account, address),
    # then backoff; the ceilings, per account and per address, sit well above it.
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window_s: int = Field(default=900, ge=1)
    login_account_max_failures: int = Field(default=100, ge=1)
    login_ip_max_failures: int = Field(default=50, ge=1)
    # Peers (CIDRs, comma-separated) whose X-Forwarded-For/-Proto are believed: the proxy or
    # ingress in front of Apiary. None by default: the TCP peer is the client.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode, CommaSeparated] = Field(
        default_factory=list
    )

    bootstrap_admin_email: str = "admin@apiary.local"

    # Bearer token a Prometheus scraper sends to GET /metrics; without one, only a direct
    # loopback connection may scrape (the figures span every tenant).
    metrics_token: SecretStr | None = None

    otel: OTelSettings = Field(default_factory=OTelSettings)
    # Errors reported to Sentry (the API and the workers), secrets scrubbed; off when unset.
    sentry_dsn: SecretStr | None = None

    # The built dashboard served at `/`; default: web/dist in the source checkout.
    web_dist: Path | None = None

    oidc: OIDCSettings | None = None
    cache: CacheSettings = Field(default_factory=CacheSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    # Qdrant: a server URL in production; default: local mode in the data dir (one process).
    qdrant_url: HttpUrl = None
    qdrant_api_key: SecretStr | None = None

    # Where executions run: inside `apiary serve`, or on Celery workers (`apiary worker`).
    runner: Literal["inprocess", "celery"] = "inprocess"
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    encryption: EncryptionSettings = Field(default_factory=EncryptionSettings)

    # The gateway (usually from the YAML file): see apiary/gateway/config.py.
    providers: list[ProviderConfig] = Field(default_factory=list)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _gateway_consistent(self) -> Settings:
        self.gateway  # noqa: B018 - cross-checks providers, routes and prices now, at start-up
        return self

    @property
    def gateway(self) -> GatewayConfig:
        return GatewayConfig(providers=self.providers, routes=self.routes, prices=self.prices)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value

    @field_validator("jwt_previous_secrets")
    @classmethod
    def _long_secrets(cls, values: list[SecretStr]) -> list[SecretStr]:
        for value in values:
            cls._long_secret(value)
        return values

    @field_validator("jwt_private_key")
    @classmethod
    def _ec_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        from apiary.auth.tokens import ec_private_key

        if value is not None:
            ec_private_key(value.get_secret_value())  # ValueError names what is wrong
        return value

    @field_validator("jwt_previous_public_keys")
    @classmethod
    def _ec_public_keys(cls, values: list[str]) -> list[str]:
        from apiary.auth.tokens import ec_public_key

        for value in values:
            ec_public_key(value)
        return values

    @model_validator(mode="after")
    def _production_secret(self) -> Settings:
        # Replicas must share the key; one generated into each data dir would not be shared.
        if self.environment == "production" and self.jwt_secret is None:
            raise ValueError(
                "APIARY_JWT_SECRET is required when APIARY_ENVIRONMENT=production (with "
                "APIARY_JWT_PRIVATE_KEY too, it verifies the HS256 tokens signed before)"
            )
        return self

    @property
    def qdrant_path(self) -> Path:
        """Where Qdrant's local mode keeps its collections when no server URL is set."""
        return self.data_dir / "qdrant"

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("APIARY_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'apiary.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    def prepare_data_dir(self) -> None:
        """Create the data dir readable by this user only (0700), and the embedded database
        in it 0600 before SQLite creates it with the umask's 0644: it holds password hashes
        and key digests. SQLite gives its journal and WAL files the database's mode."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.database_url is None:
            database = self.data_dir / "apiary.db"
            if not database.exists():
                os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))

    @cached_property
    def signing_keys(self) -> SigningKeys:
        """The key that signs access tokens and the previous ones still accepted."""
        from apiary.auth.tokens import SigningKeys

        return SigningKeys(
            self.signing_key,
            tuple(secret.get_secret_value() for secret in self.jwt_previous_secrets),
            ec_current=self.jwt_private_key.get_secret_value() if self.jwt_private_key else None,
            ec_previous=tuple(self.jwt_previous_public_keys),
        )

    @cached_property
    def signing_key(self) -> str:
        """The JWT signing secret: configured, or generated once and kept in the data dir."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.data_dir / "secrets" / "jwt.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    if not location:
        return f"invalid configuration: {first['msg']}"
    key = "APIARY_" + "__".join(location).upper()
    path = ".".join(location)
    named = key if path.upper() == key.removeprefix("APIARY_") else f"{key} ({path})"
    return f"invalid configuration: {named}: {first['msg']}"


def _check_config_file(path: str) -> None:
    """Parse the YAML file first, so its problems are reported against APIARY_CONFIG."""
    if not Path(path).is_file():
        raise ConfigError(f"invalid configuration: APIARY_CONFIG: no such file {path!r}")
    try:
        document = yaml.safe_load(Path(path).read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"invalid configuration: APIARY_CONFIG: {path}{where}: {error.problem}"
        ) from None
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"invalid configuration: APIARY_CONFIG: {path}: {error}") from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(
            f"invalid configuration: APIARY_CONFIG: {path}: the top level must be a mapping "
            "of setting names to values"
        )


_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')


def load_settings(**overrides: Any) -> Settings:
    """Read settings, turning any problem into a one-line ConfigError."""
    config_file = os.environ.get("APIARY_CONFIG")
    if config_file:
        _check_config_file(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    except SettingsError as error:  # an environment value that is not the JSON it must be
        match = _SETTINGS_ERROR_FIELD.search(str(error))
        key = f"APIARY_{match.group(1).upper()}" if match else "APIARY_*"
        raise ConfigError(
            f"invalid configuration: {key}: cannot parse the value (lists and mappings are "
            "JSON in the environment, e.g. APIARY_OIDC__ALLOWED_ALGORITHMS='[\"RS256\"]')"
        ) from None
    except Exception as error:  # anything else: still one line, never a traceback
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ConfigError(f"invalid configuration: {type(error).__name__}: {first_line}") from None
