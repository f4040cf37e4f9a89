"""Amounts in a currency's minor units (cents), as invoices store them."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Currencies without a minor unit; every other has two decimals.
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF"})


def minor_units(amount: Decimal, currency: str) -> int:
    exponent = 0 if currency in _ZERO_DECIMAL else 2
    return int((amount * (10**exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_minor(amount: int, currency: str) -> str:
    if currency in _ZERO_DECIMAL:
        return f"{amount:,} {currency}"
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100:,}.{abs(amount) % 100:02d} {currency}"
