"""The audit log: append-only, hash-chained record of security-relevant actions."""
