"""The scrape-time figures of the app the other tests use: on PostgreSQL with Redis, and
embedded (SQLite, no Redis), where the Redis figures are absent rather than reported down."""

from __future__ import annotations

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
    assert providers == set(runtime.gateway.handles)
    if runtime.settings.redis_url:
        assert value(found, "apiary_redis_up") == 1
    else:  # embedded: there is no Redis to be down
        assert "apiary_redis_up" not in found
    # The in-process runner has no Celery queue to report.
    assert "apiary_celery_queue_depth" not in found
