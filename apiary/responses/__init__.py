"""Stored responses of the OpenAI-compatible Responses API (`/v1/responses`)."""
