"""Settings from `APIARY_` environment variables over an optional YAML file, and the one-line
error an operator sees when a setting is wrong (from Python and from the real `apiary` command).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apiary.config import ConfigError, load_settings

APIARY_BIN = Path(sys.executable).parent / "apiary"


@pytest.fixture(autouse=True)
def _no_apiary_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the APIARY_ variables it sets itself."""
    for name in list(os.environ):
        if name.startswith("APIARY_"):
            monkeypatch.delenv(name)


def _write_yaml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "apiary.yaml"
    path.write_text(text)
    monkeypatch.setenv("APIARY_CONFIG", str(path))
    return path


def _config_error(**env: str) -> str:
    """The message load_settings raises with `env` set; asserts it is one line."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("invalid configuration:"), message
    return message


def test_defaults_need_nothing_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.oidc is None
    # Embedded mode: SQLite inside the data dir.
    assert settings.is_sqlite
    assert (
        settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'var' / 'apiary.db'}"
    )


def test_environment_variables_use_the_apiary_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIARY_PORT", "9123")
    monkeypatch.setenv("APIARY_HOST", "10.1.2.3")
    monkeypatch.setenv("APIARY_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("APIARY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APIARY_REDIS_URL", "redis://cache.internal:6379/2")
    monkeypatch.setenv("PORT", "1")  # unprefixed: not ours
    settings = load_settings()
    assert settings.port == 9123
    assert settings.host == "10.1.2.3"
    assert settings.log_level == "DEBUG"
    assert settings.data_dir == tmp_path
    assert settings.redis_url == "redis://cache.internal:6379/2"
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'apiary.db'}"


def test_knowledge_settings_default_to_local_qdrant_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIARY_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.qdrant_url is None
    assert settings.qdrant_path == tmp_path / "qdrant"
    assert settings.knowledge.max_upload_bytes == 20 * 1024 * 1024
    monkeypatch.setenv("APIARY_QDRANT_URL", "https://qdrant.internal:6333")
    monkeypatch.setenv("APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES", "1048576")
    settings = load_settings()
    assert settings.qdrant_url == "https://qdrant.internal:6333"
    assert settings.knowledge.max_upload_bytes == 1048576


def test_nested_oidc_settings_come_from_double_underscore_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APIARY_OIDC__ISSUER", "https://login.example/tenant/v2.0")
    monkeypatch.setenv("APIARY_OIDC__AUDIENCE", "apiary")
    monkeypatch.setenv("APIARY_OIDC__ALLOWED_ALGORITHMS", '["ES256"]')
    settings = load_settings()
    assert settings.oidc is not None
    assert settings.oidc.issuer == "https://login.example/tenant/v2.0"
    assert settings.oidc.audience == "apiary"
    assert settings.oidc.allowed_algorithms == ["ES256"]


def test_an_empty_tracing_endpoint_leaves_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose passes `APIARY_OTEL__ENDPOINT: ${APIARY_OTEL__ENDPOINT:-}`: unset in .env, the
    # server must still start, without tracing, rather than refuse an empty URL.
    monkeypatch.setenv("APIARY_OTEL__ENDPOINT", "")
    monkeypatch.setenv("APIARY_OTEL__SAMPLING_RATIO", "0.1")
    assert load_settings().otel.endpoint is None
    monkeypatch.setenv("APIARY_OTEL__ENDPOINT", "otel-collector:4318")
    with pytest.raises(ConfigError, match="http://"):
        load_settings()


def test_yaml_file_named_by_apiary_config_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_yaml(
        tmp_path,
        "port: 7000\n"
        "log_level: WARNING\n"
        "oidc:\n"
        "  issuer: https://issuer.example\n"
        "  audience: apiary-api\n"
        "  default_role: developer\n",
        monkeypatch,
    )
    settings = load_settings()
    assert settings.port == 7000
    assert settings.log_level == "WARNING"
    assert settings.oidc is not None
    assert settings.oidc.issuer == "https://issuer.example"
    assert settings.oidc.default_role == "developer"


def test_environment_wins_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, "port: 7000\nhost: 10.0.0.1\n", monkeypatch)
    monkeypatch.setenv("APIARY_PORT", "7001")
    settings = load_settings()
    assert settings.port == 7001  # from the environment
    assert settings.host == "10.0.0.1"  # the YAML still fills what the environment leaves


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:pw@db:5432/apiary", "postgresql+asyncpg://app:pw@db:5432/apiary"),
        ("postgres://app@db/apiary", "postgresql+asyncpg://app@db/apiary"),
        ("postgresql+asyncpg://app@db/apiary", "postgresql+asyncpg://app@db/apiary"),
        ("sqlite+aiosqlite:////srv/apiary.db", "sqlite+aiosqlite:////srv/apiary.db"),
    ],
)
def test_database_url_gets_the_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("APIARY_DATABASE_URL", given)
    settings = load_settings()
    assert settings.database_url == expected
    assert settings.sqlalchemy_url == expected
    assert settings.is_sqlite == expected.startswith("sqlite")


def test_database_url_from_yaml_is_normalised_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_yaml(tmp_path, "database_url: postgresql://app@db/apiary\n", monkeypatch)
    assert load_settings().sqlalchemy_url == "postgresql+asyncpg://app@db/apiary"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"APIARY_PORT": "notanumber"}, "APIARY_PORT"),
        ({"APIARY_PORT": "70000"}, "APIARY_PORT"),
        ({"APIARY_DATABASE_URL": "mysql://x"}, "APIARY_DATABASE_URL"),
        ({"APIARY_REDIS_URL": "http://cache:6379"}, "APIARY_REDIS_URL"),
        ({"APIARY_QDRANT_URL": "qdrant:6333"}, "APIARY_QDRANT_URL"),
        ({"APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES": "0"}, "APIARY_KNOWLEDGE__MAX_UPLOAD_BYTES"),
        ({"APIARY_LOG_LEVEL": "LOUD"}, "APIARY_LOG_LEVEL"),
        ({"APIARY_ENVIRONMENT": "staging"}, "APIARY_ENVIRONMENT"),
        ({"APIARY_ACCESS_TOKEN_TTL_S": "5"}, "APIARY_ACCESS_TOKEN_TTL_S"),
        (
            {
                "APIARY_OIDC__ISSUER": "https://issuer.example",
                "APIARY_OIDC__AUDIENCE": "apiary",
                "APIARY_OIDC__ALLOWED_ALGORITHMS": '["HS256"]',
            },
            "APIARY_OIDC__ALLOWED_ALGORITHMS",
        ),
        (
            {
                "APIARY_OIDC__ISSUER": "https://issuer.example",
                "APIARY_OIDC__AUDIENCE": "apiary",
                "APIARY_OIDC__ALLOWED_ALGORITHMS": '["RS256", "none"]',
            },
            "APIARY_OIDC__ALLOWED_ALGORITHMS",
        ),
        ({"APIARY_OIDC__ISSUER": "https://issuer.example"}, "APIARY_OIDC__AUDIENCE"),
    ],
    ids=[
        "port-not-a-number",
        "port-out-of-range",
        "database-url-mysql",
        "redis-url-http",
        "qdrant-url-no-scheme",
        "upload-limit-zero",
        "log-level",
        "environment",
        "token-ttl-too-short",
        "oidc-hs256",
        "oidc-none",
        "oidc-missing-audience",
    ],
)
def test_bad_environment_value_is_one_line_naming_the_key(env: dict[str, str], key: str) -> None:
    message = _config_error(**env)
    assert re.search(rf"{key}(?![A-Z_])", message), message


def test_oidc_symmetric_algorithm_is_refused_with_the_reason() -> None:
    message = _config_error(
        APIARY_OIDC__ISSUER="https://issuer.example",
        APIARY_OIDC__AUDIENCE="apiary",
        APIARY_OIDC__ALLOWED_ALGORITHMS='["HS256"]',
    )
    assert "APIARY_OIDC__ALLOWED_ALGORITHMS" in message
    assert "HS256" in message


def test_unknown_yaml_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, "port: 9000\ndatabse_url: sqlite+aiosqlite:///x.db\n", monkeypatch)
    message = _config_error()
    assert "DATABSE_URL" in message.upper()


def test_bad_yaml_value_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_yaml(tmp_path, "port: 9000\nredis_url: memcached://x\n", monkeypatch)
    assert "APIARY_REDIS_URL" in _config_error()


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = _config_error(APIARY_CONFIG=str(missing))
    assert "APIARY_CONFIG" in message
    assert str(missing) in message


@pytest.mark.parametrize(
    ("env", "yaml_text", "key"),
    [
        pytest.param(
            {},
            "port: 9000\n  : [broken\n",
            "APIARY_CONFIG",
            id="malformed-yaml",
        ),
        pytest.param(
            {},
            "- port\n- 9000\n",
            "APIARY_CONFIG",
            id="yaml-not-a-mapping",
        ),
        pytest.param(
            {
                "APIARY_OIDC__ISSUER": "https://issuer.example",
                "APIARY_OIDC__AUDIENCE": "apiary",
                "APIARY_OIDC__ALLOWED_ALGORITHMS": "RS256",
            },
            None,
            "APIARY_OIDC",
            id="list-setting-not-json",
        ),
    ],
)
def test_unparseable_configuration_is_one_line_naming_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    yaml_text: str | None,
    key: str,
) -> None:
    if yaml_text is not None:
        _write_yaml(tmp_path, yaml_text, monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert key in message


def _cli_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env["APIARY_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"APIARY_PORT": "notanumber"}, "APIARY_PORT"),
        ({"APIARY_DATABASE_URL": "mysql://x"}, "APIARY_DATABASE_URL"),
        ({"APIARY_CONFIG": "/nonexistent/apiary.yaml"}, "APIARY_CONFIG"),
    ],
    ids=["port", "database_url", "config_file"],
)
def test_cli_reports_bad_setting_in_one_line_and_exits_2(
    tmp_path: Path, extra: dict[str, str], key: str
) -> None:
    result = subprocess.run(
        [str(APIARY_BIN), "migrate"],
        env=_cli_environment(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    # Nothing was created: the command stopped before touching the database.
    assert not (tmp_path / "data" / "apiary.db").exists()


def test_jwt_secret_must_be_long_and_required_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APIARY_JWT_SECRET", "short")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "APIARY_JWT_SECRET" in str(caught.value)
    monkeypatch.delenv("APIARY_JWT_SECRET")
    monkeypatch.setenv("APIARY_ENVIRONMENT", "production")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "APIARY_JWT_SECRET is required" in str(caught.value)
    monkeypatch.setenv("APIARY_JWT_SECRET", "x" * 40)
    assert load_settings().environment == "production"
