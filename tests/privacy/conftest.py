"""Fixtures for the privacy tests: the gateway app on the fake upstream (a swarm to run)."""

from __future__ import annotations

from tests.gateway.conftest import make_gateway

__all__ = ["make_gateway"]
