"""Billing: plans and their entitlements, metering per calendar month, and invoices."""
