"""Structured logging, request context and Prometheus metrics for the HTTP service."""
