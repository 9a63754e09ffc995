"""Prices users control: negotiated rates, fine-tunes, self-hosted and gateway models.

A user price table (``payi_instrument(prices=[...])``, or the JSON file named by
``PAYI_PRICES_FILE``) is a list of entries, each priced per million tokens::

    {"model": "ft:gpt-4o-mini:acme:*",  # the model as priced (see below); "*" at the end:
                                         #   every model starting so (fine-tunes)
     "provider": "openai",              # optional: only calls priced as this provider
                                         #   (a genai-prices id or a Pay-i category)
     "input": 0.30, "output": 1.20,     # required: per million tokens
     "cache_read": 0.15,                # optional: cache reads (else at the input price)
     "cache_write": 0.375,              # optional: cache writes (else at the input price)
     "currency": "USD"}                 # optional: ISO 4217 code, default USD

An entry matches a call on the model it is priced as (its ``price_as_resource``, else the
model it names, case-insensitive) and, when it names one, the provider; the table is tried
before ``genai-prices``: exact model names first, then ``*`` prefixes, longest first; among
equals the first entry wins. Prices are numbers (or numeric strings), finite, >= 0, below
10**15 per million tokens and with at most 30 decimal places (trailing zeros aside: no real
price comes near either bound, and an exponent far beyond them would make every priced call
slow); a float is taken as written (``0.3`` is ``Decimal("0.3")``).

Pure Python (the model wing): validation here, pricing in ``_prices``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import NamedTuple, Optional, Tuple

from payi_otel._model.parameters import ParameterTypeError, ParameterValueError

__all__ = ["UserPrice", "find_user_price", "parse_prices"]

_REQUIRED = ("model", "input", "output")
_PRICES = ("input", "output", "cache_read", "cache_write")
_KEYS = ("model", "provider", *_PRICES, "currency")


class UserPrice(NamedTuple):
    """One validated entry (:func:`parse_prices`)."""

    #: Lower-cased; ending in ``*``: a prefix.
    model: str
    #: Lower-cased, as written (a genai-prices id or a Pay-i category); None: any provider.
    provider: Optional[str]
    #: Per million tokens.
    input: Decimal
    output: Decimal
    cache_read: Optional[Decimal]
    cache_write: Optional[Decimal]
    currency: str


def _decimal(value: object, where: str, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ParameterTypeError(
            f"{where}: {key!r} must be a number (per million tokens), not {type(value).__name__}"
        )
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise ParameterValueError(
            f"{where}: {key!r} must be a number (per million tokens), got {value!r}"
        ) from None
    if not number.is_finite() or number < 0 or (isinstance(value, float) and math.isnan(value)):
        raise ParameterValueError(
            f"{where}: {key!r} must be a finite number >= 0 (per million tokens), got {value!r}"
        )
    # Trailing zeros aside (exactly: a price may be given with more digits than a context
    # keeps), and kept so: its scale is what pricing computes at (``_prices``).
    number = number.normalize(EXACT)
    if number >= MAX_PRICE or -int(number.as_tuple().exponent) > MAX_PLACES:
        raise ParameterValueError(
            f"{where}: {key!r} must be below {MAX_PRICE:,} (per million tokens) with at most "
            f"{MAX_PLACES} decimal places, got {value!r}"
        )
    return number


#: Bounds of a price per million tokens (the module's docstring).
MAX_PRICE = 10**15
MAX_PLACES = 30
#: A decimal context in which nothing is rounded (any finite Decimal normalized, scaled or
#: summed exactly): prices are never computed in the program's own context (``_prices``).
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _text(value: object, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ParameterTypeError(f"{where}: {key!r} must be a string, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ParameterValueError(f"{where}: {key!r} must not be empty")
    return text


def parse_prices(value: object, what: str) -> Tuple[UserPrice, ...]:
    """Validate a user price table (``what`` names its source in errors: ``prices``,
    ``PAYI_PRICES_FILE=<path>``); each error names the entry (index and model) and key."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ParameterTypeError(
            f"{what} must be a list of price entries, not {type(value).__name__}"
        )
    entries = []
    for index, raw in enumerate(value):
        where = f"{what}[{index}]"
        if not isinstance(raw, Mapping):
            raise ParameterTypeError(
                f"{where} must be a mapping with 'model', 'input' and 'output', "
                f"not {type(raw).__name__}"
            )
        if isinstance(raw.get("model"), str):
            where = f"{where} (model {raw['model']!r})"
        unknown = [k for k in raw if k not in _KEYS]
        if unknown:
            raise ParameterValueError(
                f"{where}: unknown keys {unknown}; an entry has {list(_KEYS)} "
                "(prices per million tokens)"
            )
        missing = [k for k in _REQUIRED if raw.get(k) is None]
        if missing:
            raise ParameterValueError(f"{where}: missing {missing}")
        model = _text(raw["model"], where, "model").lower()
        if "*" in model[:-1] or model == "*":
            raise ParameterValueError(
                f"{where}: 'model' may end in one '*' (a prefix), got {raw['model']!r}"
            )
        provider = raw.get("provider")
        currency = raw.get("currency", "USD")
        currency = _text(currency, where, "currency").upper()
        if len(currency) != 3 or not currency.isalpha() or not currency.isascii():
            raise ParameterValueError(
                f"{where}: 'currency' must be a 3-letter ISO 4217 code, got {raw['currency']!r}"
            )
        prices = {
            key: None if raw.get(key) is None else _decimal(raw[key], where, key) for key in _PRICES
        }
        entries.append(
            UserPrice(
                model=model,
                provider=None if provider is None else _text(provider, where, "provider").lower(),
                input=prices["input"] or Decimal(0),
                output=prices["output"] or Decimal(0),
                cache_read=prices["cache_read"],
                cache_write=prices["cache_write"],
                currency=currency,
            )
        )
    return tuple(entries)


def find_user_price(
    entries: Sequence[UserPrice], provider: Optional[str], model: str
) -> Optional[Tuple[int, UserPrice]]:
    """The entry pricing ``model`` as ``provider`` (None: any provider), with its index: an
    exact model name first, then the longest ``*`` prefix; the first of equals."""
    name = model.lower()
    best: Optional[Tuple[int, UserPrice]] = None
    best_length = -1
    for index, entry in enumerate(entries):
        if entry.provider is not None and entry.provider != provider:
            continue
        if entry.model == name:
            return index, entry
        if entry.model.endswith("*"):
            prefix = entry.model[:-1]
            if name.startswith(prefix) and len(prefix) > best_length:
                best, best_length = (index, entry), len(prefix)
    return best
