from tests.gateway.conftest import make_gateway
from tests.swarm.conftest import swarm

__all__ = ["make_gateway", "swarm"]
