"""Alerts that reach people: budget thresholds, entitlement refusals, invoices, failed
payments and open provider breakers, told through signed webhooks and e-mail."""
