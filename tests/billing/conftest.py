from tests.fakes.stripe import fake_stripe
from tests.gateway.conftest import make_gateway
from tests.swarm.conftest import swarm

__all__ = ["fake_stripe", "make_gateway", "swarm"]
