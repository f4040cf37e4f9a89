"""Billing's errors, in the house error family (one handler renders them).

A refusal that a bigger plan lifts for money is a 402 (`EntitlementExceeded`: seats,
sub-agents, concurrent executions, knowledge bases, stored bytes, the included spend); a
feature the tenant's plan does not have at all is a 403 (`FeatureNotInPlan`). Both name the
entitlement and the plan."""

from __future__ import annotations

from apiary.errors import Forbidden, PaymentRequired


class EntitlementExceeded(PaymentRequired):
    pass


class FeatureNotInPlan(Forbidden):
    pass
