"""The scrape-time figures of the app the other tests use: on PostgreSQL with Redis, and
embedded (SQLite, no Redis), where the Redis figures are absent rather than reported down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from apiary.runtime import Runtime
from tests.factories import METRICS_TOKEN
from tests.observability.live import samples, value

pytestmark = pytest.mark.both_databases


async def test_the_apps_scrape_reports_its_database_and_state(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "apiary_database_up") == 1
    assert "apiary_executions" in found
    assert value(found, "apiary_db_pool_capacity") > 0
    providers = {labels["provider"] for labels, _ in found["apiary_gateway_breaker_state"]}
    assert providers == set(runtime.providers.handles)
    if runtime.settings.redis_url:
        assert value(found, "apiary_redis_up") == 1
    else:  # embedded: there is no Redis to be down
        assert "apiary_redis_up" not in found
    # The in-process runner has no Celery queue to report.
    assert "apiary_celery_queue_depth" not in found


def test_a_prefork_worker_refuses_to_serve_metrics(tmp_path: Path) -> None:
    # Its tasks' figures live in child processes: serving the parent's would show zeros.
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    env |= {"APIARY_DATA_DIR": str(tmp_path), "APIARY_REDIS_URL": "redis://127.0.0.1:1/0"}
    apiary = str(Path(sys.executable).parent / "apiary")
    done = subprocess.run(
        [apiary, "worker", "--pool=prefork", "--metrics-port=9100"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--metrics-port needs the threads or solo pool" in done.stderr
