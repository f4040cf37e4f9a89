"""Per-tenant budgets and rate limits, and their enforcement on every gateway call."""
