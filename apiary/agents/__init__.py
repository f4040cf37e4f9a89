"""Agent definitions: what a swarm's orchestrator and sub-agents are told, versioned."""
