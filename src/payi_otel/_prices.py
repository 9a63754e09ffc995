"""What one call costs, in microseconds: the price tables ``_cost`` reads (README: "Cost and
usage"; docs/performance.md).

:class:`PriceTable` prices a call's tokens as one (provider, model): first by the user's own
prices (``payi_instrument(prices=...)`` / ``PAYI_PRICES_FILE``; ``_model.user_prices``), else
by ``genai-prices``. ``genai-prices`` is imported when the first call is priced, not when
payi_otel is imported or instrumented (it takes ~200 ms to import).

``genai_prices.calc_price`` takes 70-140 µs a call (it infers missing usage fields and
validates units every time). For a (provider, model) whose current price is a fixed linear
function of the four token counts payi_otel reads - neither tiered (``TieredPrices``) nor
conditional on the time of day, nor about to change (a dated price still to come) - the
coefficients of that function are read once from ``calc_price`` itself (the price of no
usage, of one input token, one output token, one cache read, one cache write: each exact),
checked against ``calc_price`` on one more usage, and every later call is an exact
multiply-and-sum in integers at the price's decimal scale (~0.7 µs: :class:`Linear`).
Anything else, any usage outside the region where ``calc_price`` is linear (cache reads
and writes exceeding the input), and a call with a part rated apart (audio, image or video
tokens, one-hour cache writes: :attr:`Tokens.parts`) calls ``calc_price``.
``tests/test_prices_equality.py`` proves both paths equal to ``calc_price`` over every model
of the snapshot.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal, localcontext
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from payi_otel._log import logger
from payi_otel._model.user_prices import EXACT, UserPrice, find_user_price

__all__ = ["GENAI_PRICES", "USER", "Linear", "Price", "PriceTable", "Tokens", "linear_region"]

#: ``payi_otel.cost.source``: who priced the call.
GENAI_PRICES = "genai-prices"
USER = "user"

_ZERO = Decimal(0)
#: genai-prices' usage keys of the four counts of :class:`Tokens` a linear form reads (its
#: first four fields, in order).
_COUNT_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_COUNTS = len(_COUNT_KEYS)


class Tokens(NamedTuple):
    """The counts a price reads (``Usage``: input includes cache reads and writes)."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    #: The parts of those counts a price may rate apart (``_providers.USAGE_PARTS``: audio,
    #: image and video tokens, cache writes kept an hour), by genai-prices' usage key, each
    #: not zero. A call with any is priced by ``calc_price`` (genai-prices rates each part
    #: the model prices at its own rate, and any other at its count's); a user's price rates
    #: them at their count's.
    parts: Tuple[Tuple[str, int], ...] = ()


class Price(NamedTuple):
    """What one call cost, and who priced it as what. Its figures are kept as integers at a
    scale (exact); ``input``, ``output`` and ``total`` are their Decimals, ``floats`` their
    floats: a call's span attributes and metric points need only the floats, which cost a
    division each where a Decimal costs more and ``float()`` of one parses a string."""

    #: Input, output and total times ``10 ** scale``, exactly.
    units: Tuple[int, int, int]
    scale: int
    currency: str
    #: The provider and model it was priced as (genai-prices' ids, or the user's entry's).
    provider: str
    model: str
    #: :data:`GENAI_PRICES` or :data:`USER`.
    source: str
    #: The three figures as floats (the span attributes and metric points carry them): each
    #: the float nearest its exact value, as ``float()`` of its Decimal is.
    floats: Tuple[float, float, float]

    @property
    def input(self) -> Decimal:
        return _decimal(self.units[0], self.scale)

    @property
    def output(self) -> Decimal:
        return _decimal(self.units[1], self.scale)

    @property
    def total(self) -> Decimal:
        return _decimal(self.units[2], self.scale)


def _decimal(units: int, scale: int) -> Decimal:
    return Decimal(units).scaleb(-scale, EXACT)


def _price_of(
    figures: Tuple[Decimal, Decimal, Decimal],
    currency: str,
    provider: str,
    model: str,
    source: str,
) -> Price:
    """A :class:`Price` of three Decimals (input, output, total)."""
    scale = _scale_of(figures)
    units = (
        _integer(figures[0], scale),
        _integer(figures[1], scale),
        _integer(figures[2], scale),
    )
    return Price(units, scale, currency, provider, model, source, _floats(units, scale))


def _floats(units: Tuple[int, int, int], scale: int) -> Tuple[float, float, float]:
    """The floats of figures in units at ``scale``: each the float nearest its exact value
    (an integer true division rounds once), inf beyond a float's range (as ``float()`` of
    the Decimal)."""
    divisor = 10**scale
    try:
        return units[0] / divisor, units[1] / divisor, units[2] / divisor
    except OverflowError:
        return (
            float(_decimal(units[0], scale)),
            float(_decimal(units[1], scale)),
            float(_decimal(units[2], scale)),
        )


#: genai-prices' linear prices give figures below this many units (at their scale) exactly
#: as ``calc_price`` does; at or above it, ``calc_price`` prices the call. ``calc_price``
#: computes with Python's default 28 significant digits, and sums non-negative terms (each
#: at most the total): a total under 10**25 units, exact in 25 digits, is never rounded
#: there. Only an unreal call gets so far (billions of tokens at today's prices), and there
#: the figure is ``calc_price``'s, rounded as it rounds (``tests/test_prices_equality.py``).
CALC_PRICE_EXACT_BELOW = 10**25


#: One linear form over :class:`Tokens`: its constant and its (field index, coefficient)
#: terms with a nonzero coefficient.
_Form = Tuple[Decimal, Tuple[Tuple[int, Decimal], ...]]


#: A linear form in integers: its constant and terms at the price's scale (the value times
#: ``10 ** scale``, exactly).
_Ints = Tuple[int, Tuple[Tuple[int, int], ...]]


def _apply(form: _Ints, tokens: Tokens) -> int:
    value, terms = form
    for index, coefficient in terms:
        count: int = tokens[index]  # type: ignore[assignment]  # (a term reads a count)
        if count:
            value += coefficient * count
    return value


class Linear(NamedTuple):
    """A price that is linear in the token counts: input, output and total forms (total
    None: the sum of input and output, as it is when every priced unit has a direction),
    in integers at one scale: a call's figures are integer sums, exact (a :class:`Price`
    keeps them so), and their floats one division each (``n / 10 ** scale``: Python
    rounds an integer division once, to the float nearest the exact value)."""

    input: _Ints
    output: _Ints
    total: Optional[_Ints]
    scale: int
    #: ``10 ** scale``.
    divisor: int
    currency: str
    provider: str
    model: str
    source: str
    #: A figure this large or larger (in units) is left to ``calc_price`` (:meth:`price`
    #: gives None); 0: no bound (a user's price is exact at any size).
    bound: int = 0
    #: The parts (:attr:`Tokens.parts`) the model's price rates apart (genai-prices'
    #: usage keys): a call with none of them is priced here, as ``calc_price`` prices it
    #: (a part a price does not rate counts as its count's tokens).
    rated: FrozenSet[str] = frozenset()

    def price(self, tokens: Tokens) -> Optional[Price]:
        """The price of ``tokens``, exact; None where ``calc_price`` must say (:attr:`bound`)."""
        inp = _apply(self.input, tokens)
        out = _apply(self.output, tokens)
        total = self.total
        whole = inp + out if total is None else _apply(total, tokens)
        bound = self.bound
        if bound and (inp >= bound or out >= bound or whole >= bound):
            return None
        divisor = self.divisor
        try:
            floats = (inp / divisor, out / divisor, whole / divisor)
        except OverflowError:  # beyond a float: as float() of the Decimal (inf)
            floats = _floats((inp, out, whole), self.scale)
        # (``tuple.__new__``: a NamedTuple's own ``__new__`` is one more Python call.)
        return tuple.__new__(
            Price,
            (
                (inp, out, whole),
                self.scale,
                self.currency,
                self.provider,
                self.model,
                self.source,
                floats,
            ),
        )


def _scale_of(values: Sequence[Decimal]) -> int:
    """The number of decimal places that makes every one of ``values`` an integer."""
    return max([0, *(-int(v.as_tuple().exponent) for v in values)])  # (finite: an int)


def _integer(value: Decimal, scale: int) -> int:
    """``value * 10 ** scale``, exactly (an integer at that scale)."""
    sign, digits, exponent = value.as_tuple()
    shift = int(exponent) + scale  # >= 0: ``scale`` is at least -exponent
    number = int("".join(map(str, digits)) or "0") * int(10**shift)
    return -number if sign else number


def _ints(form: _Form, scale: int) -> _Ints:
    return _integer(form[0], scale), tuple((i, _integer(c, scale)) for i, c in form[1])


def _linear(
    input_form: _Form,
    output_form: _Form,
    total_form: _Form,
    currency: str,
    provider: str,
    model: str,
    source: str,
    bound: int = 0,
    rated: FrozenSet[str] = frozenset(),
) -> Linear:
    add = EXACT.add  # (exact: not in the caller's precision)
    summed = _form(
        add(input_form[0], output_form[0]),
        [
            add(dict(input_form[1]).get(i, _ZERO), dict(output_form[1]).get(i, _ZERO))
            for i in range(_COUNTS)
        ],
    )
    # (Finite numbers all: genai-prices', or a user's, validated.)
    forms = (input_form, output_form, total_form)
    scale = _scale_of([v for form in forms for v in (form[0], *(c for _, c in form[1]))])
    return Linear(
        _ints(input_form, scale),
        _ints(output_form, scale),
        None if summed == total_form else _ints(total_form, scale),
        scale,
        10**scale,
        currency,
        provider,
        model,
        source,
        bound,
        rated,
    )


def _form(constant: Decimal, coefficients: Sequence[Decimal]) -> _Form:
    return constant, tuple((i, c) for i, c in enumerate(coefficients) if c)


def linear_region(tokens: Tokens, rated: FrozenSet[str] = frozenset()) -> bool:
    """Whether ``calc_price`` is linear at ``tokens`` as the linear forms read it: no part
    the price rates apart (``rated``; :attr:`Tokens.parts`), and cache reads and writes are
    part of the input (beyond it, ``calc_price`` raises; it is called to say so)."""
    if tokens.parts and rated and any(key in rated for key, _ in tokens.parts):
        return False
    return tokens.cache_read + tokens.cache_write <= tokens.input


def user_linear(entry: UserPrice, provider: str, model: str) -> Linear:
    """A user's price as a linear form, counted as ``genai-prices`` counts: the input price
    for the input tokens that are neither cache reads nor writes when those have their own
    price, the input price for them otherwise. Exact, whatever the caller's decimal
    precision."""
    with localcontext(EXACT):
        return _user_linear(entry, provider, model)


def _user_linear(entry: UserPrice, provider: str, model: str) -> Linear:
    per = Decimal(1_000_000)
    inp = entry.input / per
    read = inp if entry.cache_read is None else entry.cache_read / per
    write = inp if entry.cache_write is None else entry.cache_write / per
    out = entry.output / per
    # input, output, cache_read, cache_write
    input_form = _form(_ZERO, (inp, _ZERO, read - inp, write - inp))
    output_form = _form(_ZERO, (_ZERO, out, _ZERO, _ZERO))
    total_form = _form(_ZERO, (inp, out, read - inp, write - inp))
    return _linear(
        input_form,
        output_form,
        total_form,
        entry.currency,
        provider,
        model,
        USER,
    )


class _Slow(NamedTuple):
    """A (provider, model) ``calc_price`` prices every time (tiered, time-dependent)."""

    provider_id: Optional[str]
    model: str


_Entry = Union[Linear, _Slow, None]  # None: genai-prices has no price for it
_UNSEEN = object()


class _GenaiPrices:
    """``genai-prices``, imported on first use, and its coefficients per (provider, model)."""

    def __init__(self) -> None:
        self._module: Any = None
        self._missing = False
        self._snapshot: Any = None
        self._entries: Dict[Tuple[Optional[str], str], _Entry] = {}
        #: Reentrant: importing may run a collection whose finalizers price a call.
        self._lock = threading.RLock()
        self._importing = False

    def _load(self) -> Any:
        if self._module is None and not self._missing:
            with self._lock:
                if self._importing:  # a finalizer run while importing, on this thread
                    return None
                if self._module is None and not self._missing:
                    self._importing = True
                    try:
                        import genai_prices
                        import genai_prices.data_snapshot
                    except ImportError:
                        self._missing = True
                        logger.warning(
                            "payi_otel: genai-prices is not installed (it needs Python >= "
                            "3.11), so GenAI calls get usage but no cost; on Python >= 3.11: "
                            "pip install 'genai-prices>=0.2'"
                        )
                        return None
                    finally:
                        self._importing = False
                    self._module = genai_prices
        return self._module

    def current_snapshot(self) -> object:
        """genai-prices' snapshot now (None before it is imported)."""
        prices = self._module
        return None if prices is None else prices.data_snapshot.get_snapshot()

    def entry(self, provider_id: Optional[str], model: str) -> Tuple[Any, _Entry]:
        """genai-prices (None when not installed) and the entry of (provider, model)."""
        prices = self._module
        if prices is None:
            prices = self._load()
            if prices is None:
                return None, None
        snapshot = prices.data_snapshot.get_snapshot()
        if snapshot is not self._snapshot:  # prices updated (genai-prices' UpdatePrices)
            self._entries = {}
            self._snapshot = snapshot
        key = (provider_id, model)
        entries = self._entries
        known = entries.get(key, _UNSEEN)
        if known is not _UNSEEN:
            return prices, known  # type: ignore[return-value]
        try:
            entry = self._coefficients(prices, provider_id, model)
        except LookupError:
            entry = None
        entries[key] = entry
        return prices, entry

    def _coefficients(self, prices: Any, provider_id: Optional[str], model: str) -> _Entry:
        """The linear form of the current price of (provider, model), or :class:`_Slow`."""
        snapshot = prices.data_snapshot.get_snapshot()
        found_provider, info = snapshot.find_provider_model(model, None, provider_id, None)
        if not _fixed(prices, info):
            return _Slow(provider_id, model)
        calc = prices.calc_price
        usage = prices.Usage

        def at(**counts: int) -> Any:
            return calc(usage(**counts), model_ref=model, provider_id=provider_id)

        try:
            base = at()
            probes = (
                at(input_tokens=1),
                at(output_tokens=1),
                at(input_tokens=1, cache_read_tokens=1),
                at(input_tokens=1, cache_write_tokens=1),
            )
        except ValueError:
            return _Slow(provider_id, model)
        forms: List[_Form] = []
        with localcontext(EXACT):  # differences of calc_price's figures, exact
            for part in ("input_price", "output_price", "total_price"):
                zero = getattr(base, part)
                one_input = getattr(probes[0], part) - zero
                coefficients = (
                    one_input,
                    getattr(probes[1], part) - zero,
                    getattr(probes[2], part) - zero - one_input,
                    getattr(probes[3], part) - zero - one_input,
                )
                forms.append(_form(zero, coefficients))
        linear = _linear(
            forms[0],
            forms[1],
            forms[2],
            "USD",
            base.provider.id,
            base.model.id,
            GENAI_PRICES,
            CALC_PRICE_EXACT_BELOW,
            _rated(prices, info),
        )
        # One more usage, every field at once: a price that is not linear after all (a
        # genai-prices change this reading does not know) is priced by calc_price.
        check = Tokens(1_234_567, 76_543, 1_000, 3_000)
        expected = at(
            input_tokens=check.input,
            output_tokens=check.output,
            cache_read_tokens=check.cache_read,
            cache_write_tokens=check.cache_write,
        )
        got = linear.price(check)
        if (
            got is None
            or (got.input, got.output, got.total)
            != (
                expected.input_price,
                expected.output_price,
                expected.total_price,
            )
            or found_provider.id != base.provider.id
        ):
            return _Slow(provider_id, model)
        return linear


def _current(prices: Any, info: Any) -> Any:
    """The ``ModelPrice`` of a model whose price is fixed (:func:`_fixed`): its own, or its
    last conditional one."""
    current = info.prices
    return current if isinstance(current, prices.types.ModelPrice) else current[-1].prices


def _rated(prices: Any, info: Any) -> FrozenSet[str]:
    """The usage keys a fixed price rates besides the four counts (its other ``<key>_mtok``
    prices): the parts it rates apart, among them."""
    found = set()
    for key, value in vars(_current(prices, info)).items():
        if value is not None and key.endswith("_mtok"):
            found.add(key[: -len("_mtok")] + "_tokens")
    return frozenset(found.difference(_COUNT_KEYS))


def _fixed(prices: Any, info: Any) -> bool:
    """Whether the price of a genai-prices model is the same at every call from now on: not
    tiered, and either unconditional or its last conditional price (which wins whenever it is
    active) started already and stays (a start date, no time of day)."""
    types = prices.types
    current = info.prices
    if not isinstance(current, types.ModelPrice):
        last = current[-1]
        constraint = last.constraint
        if constraint is not None:
            if not isinstance(constraint, types.StartDateConstraint):
                return False
            if not constraint.active(datetime.now(tz=timezone.utc)):
                return False
        current = last.prices
    return not any(isinstance(v, types.TieredPrices) for v in vars(current).values())


class PriceTable:
    """The user's prices over ``genai-prices``' (``_cost`` makes one per instrumentation,
    so its coefficients are computed once per (provider, model) per instrumentation)."""

    def __init__(
        self,
        user_prices: Sequence[UserPrice] = (),
        provider_id: Callable[[str], str] = lambda name: name,
    ) -> None:
        #: The entries, each provider as its genai-prices id (``provider_id``).
        self._user = tuple(
            e if e.provider is None else e._replace(provider=provider_id(e.provider))
            for e in user_prices
        )
        self._user_found: Dict[Tuple[Optional[str], str], Optional[Linear]] = {}
        self._unpriced: Set[Tuple[Optional[str], str]] = set()
        #: genai-prices, imported when a call it prices first comes, and its coefficients.
        self.genai = _GenaiPrices()

    def user(self, provider_id: Optional[str], model: str) -> Optional[Linear]:
        """The user's price of (provider, model), if the table has one."""
        if not self._user:
            return None
        key = (provider_id, model)
        try:
            return self._user_found[key]
        except KeyError:
            pass
        found = find_user_price(self._user, provider_id, model)
        linear = (
            None
            if found is None
            else user_linear(found[1], found[1].provider or provider_id or "", model)
        )
        self._user_found[key] = linear
        return linear

    def newly_unpriced(self, provider_id: Optional[str], model: str) -> bool:
        """True the first time a (provider, model) nobody prices is reported (one DEBUG line)."""
        key = (provider_id, model)
        if key in self._unpriced:
            return False
        self._unpriced.add(key)
        return True

    def price(
        self, provider_id: Optional[str], model: str, tokens: Tokens, at: Optional[float] = None
    ) -> Optional[Price]:
        """The price of ``tokens`` as (provider, model) for a call made at ``at`` (seconds
        since the epoch; None: now), which only a price by the time of day reads; None when
        nobody prices it (a ``LookupError`` of genai-prices, or genai-prices not
        installed). A usage ``calc_price`` refuses raises its ``ValueError``."""
        prices, entry = self._entry(provider_id, model)
        if entry is None:
            return None
        if isinstance(entry, Linear):
            if entry.source == USER:
                # A user's price has no part rates (its parts are their counts' tokens); it
                # refuses what calc_price refuses: cache beyond the input prices below zero.
                if not linear_region(tokens):
                    raise ValueError(
                        f"cache reads and writes ({tokens.cache_read + tokens.cache_write}) "
                        f"exceed the input tokens ({tokens.input})"
                    )
                return entry.price(tokens)
            if linear_region(tokens, entry.rated):
                price = entry.price(tokens)
                if price is not None:
                    return price
        return calc_price(prices, provider_id, model, tokens, at)

    def linear(self, provider_id: Optional[str], model: str) -> Optional[Linear]:
        """The linear price of (provider, model) :meth:`price` uses in the linear region
        (the user's, else genai-prices' of its current snapshot), if it has one."""
        _, entry = self._entry(provider_id, model)
        return entry if isinstance(entry, Linear) else None

    def _entry(self, provider_id: Optional[str], model: str) -> Tuple[Any, _Entry]:
        """What prices (provider, model): the user's price first, else genai-prices' entry
        (with genai-prices, for ``calc_price``)."""
        if self._user:
            user = self.user(provider_id, model)
            if user is not None:
                return None, user
        return self.genai.entry(provider_id, model)


def calc_price(
    prices: Any, provider_id: Optional[str], model: str, tokens: Tokens, at: Optional[float] = None
) -> Price:
    """``genai_prices.calc_price`` itself, as a :class:`Price`, for a call made at ``at``
    (seconds since the epoch; None: now)."""
    usage = {key: count for key, count in zip(_COUNT_KEYS, tokens) if count}
    usage.update(tokens.parts)
    if tokens.cache_read:
        # Audio (image, video) input with cache reads that name none of it: none of it was
        # read from the cache (genai-prices refuses to guess: Gemini's cached text prefix
        # with fresh audio, whose cache details list only TEXT).
        for key, _ in tokens.parts:
            if key.startswith("input_"):
                usage.setdefault(
                    "cache_" + key[len("input_") : -len("_tokens")] + "_read_tokens", 0
                )
    calculation = prices.calc_price(
        prices.Usage(**usage),
        model_ref=model,
        provider_id=provider_id,
        genai_request_timestamp=None if at is None else datetime.fromtimestamp(at, timezone.utc),
    )
    return _price_of(
        (calculation.input_price, calculation.output_price, calculation.total_price),
        "USD",
        calculation.provider.id,
        calculation.model.id,
        GENAI_PRICES,
    )
