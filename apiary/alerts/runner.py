"""A process's alert machinery, owned by the runtime: the emitter that writes alerts raised
off a transaction, the dispatcher that sends deliveries, and the hooks the gateway calls
(budget thresholds from the limits enforcer, breakers opening)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apiary.alerts import emitter as process
from apiary.alerts.dispatcher import AlertDispatcher
from apiary.alerts.emitter import AlertEmitter
from apiary.alerts.events import AlertEvent, AlertKind
from apiary.config import AlertSettings
from apiary.db import session_scope


class AlertRunner:
    def __init__(self, factory: async_sessionmaker[AsyncSession], settings: AlertSettings) -> None:
        self.settings = settings
        self._factory = factory
        self.emitter = AlertEmitter(self._write, maxsize=settings.queue_size)
        self.dispatcher = AlertDispatcher(factory, settings)
        self._started = False

    async def _write(self, alert: AlertEvent) -> None:
        from apiary.alerts.service import PlatformChannels, alert_service

        async with session_scope(self._factory) as session:
            await alert_service.notify(session, alert, platform=PlatformChannels.of(self.settings))

    def start(self) -> None:
        self.emitter.start()
        self.dispatcher.start()
        process.install(self.emitter, self.dispatcher)
        self._started = True

    async def close(self) -> None:
        if self._started:
            process.uninstall(self.emitter, self.dispatcher)
        await self.emitter.close()
        await self.dispatcher.close()

    def emit(self, alert: AlertEvent) -> None:
        self.emitter.emit(alert)

    def breaker_opened(self, provider: str, *, failures: int, cooldown_s: float) -> None:
        """A provider's breaker opened in this process: tell the platform once per
        provider per `breaker_period_s` (every replica's breaker opens on its own)."""
        period_s = self.settings.breaker_period_s
        now = dt.datetime.now(dt.UTC)
        start = dt.datetime.fromtimestamp(now.timestamp() // period_s * period_s, dt.UTC)
        self.emit(
            AlertEvent(
                AlertKind.PROVIDER_BREAKER_OPEN,
                None,
                subject=provider,
                period=start.strftime("%Y-%m-%dT%H:%M"),
                data={
                    "provider": provider,
                    "consecutive_failures": failures,
                    "cooldown_s": cooldown_s,
                },
            )
        )

    def budget_crossed(
        self,
        tenant_id: uuid.UUID,
        *,
        month: str,
        threshold: int,
        spent_usd: float,
        budget_usd: float,
        refused: bool,
    ) -> None:
        period = f"{month[:4]}-{month[4:]}"
        self.emit(
            AlertEvent(
                AlertKind.BUDGET_THRESHOLD,
                tenant_id,
                subject=str(threshold),
                period=period,
                data={
                    "threshold": threshold,
                    "period": period,
                    "spent_usd": round(spent_usd, 6),
                    "budget_usd": budget_usd,
                    "refused": refused,
                },
            )
        )
