"""Tenant API keys: shown once, stored as a hash, usable wherever a JWT is."""
