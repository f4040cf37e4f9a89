"""Errors of the knowledge domain, in the house error family (one handler renders them)."""

from __future__ import annotations

from apiary.errors import ApiaryError


class PayloadTooLarge(ApiaryError):
    status_code = 413


class UnsupportedMediaType(ApiaryError):
    status_code = 415


class ExtractionError(Exception):
    """A document whose text cannot be read; its message becomes the document's `error`."""


class ExtractionLimitExceeded(ExtractionError):
    """A document past one of the extraction caps; the message names the cap and its setting."""
