"""The LLM gateway: every model call, from a swarm or an OpenAI SDK, goes through here."""
