"""Authentication: passwords, JWT access tokens, rotating refresh tokens, API keys, OIDC."""
