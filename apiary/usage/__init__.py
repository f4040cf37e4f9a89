"""Usage: the per-call ledger, written in batches off the request path."""
