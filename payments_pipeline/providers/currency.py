"""Amounts in minor units: a currency's ISO 4217 exponent, and Monetbil's major-unit amounts.

The exponents come from the `iso4217` package, which ships the standard's own published table
(SIX Financial Information's list-one XML): XAF and JPY 0, EUR and USD 2, KWD 3. A code the
table does not know, or one without minor units (gold, testing codes), is refused: converting an
amount in it would be a guess.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

import iso4217

from payments_pipeline.providers.errors import PayloadError

_MAX_MINOR = 10**18 - 1  # fits a BIGINT column
# Digits with optional thousands separators (spaces, no-break spaces, commas between groups of
# three, as "1 000" or "1,000"), then an optional decimal point and decimals.
_MAJOR = re.compile(r"[0-9]{1,3}(?:[ \u00a0\u202f,]?[0-9]{3})*(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?")


@functools.cache
def exponent(currency: str) -> int:
    """Digits after the decimal point in `currency` (three letters, any case)."""
    try:
        found = iso4217.Currency(currency.strip().upper()).exponent
    except ValueError:
        raise PayloadError("currency is not an ISO 4217 code") from None
    if found is None:
        raise PayloadError("currency has no minor unit (ISO 4217)")
    return int(found)


def to_minor_units(major: str, currency: str) -> int:
    """`"10.50"` USD -> 1050; `"1 000"` XAF -> 1000. Refuses (`PayloadError`) what is not an
    amount, a negative one, more decimals than the currency has (no rounding of money), or one
    too large for the column."""
    text = major.strip()
    if not _MAJOR.fullmatch(text):
        raise PayloadError("amount is not a number in major units")
    try:
        value = Decimal(re.sub(r"[ \u00a0\u202f,]", "", text))
    except InvalidOperation:
        raise PayloadError("amount is not a number in major units") from None
    minor = value.scaleb(exponent(currency))
    if minor != minor.to_integral_value():
        raise PayloadError("amount has more decimals than its currency's minor unit")
    if minor > _MAX_MINOR:
        raise PayloadError("amount is too large")
    return int(minor)
