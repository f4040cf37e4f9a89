"""The gateway fixtures, so usage tests can write the ledger through real /v1 calls."""

from tests.gateway.conftest import gateway, make_gateway

__all__ = ["gateway", "make_gateway"]
