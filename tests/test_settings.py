"""The process settings (``_settings``): one frozen value, built once per instrumentation, put
back to the default by uninstrumenting; a bad variable raises in code and is one ERROR line
under ``opentelemetry-instrument``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional

import pytest
from fixtures_otel import Otel

from payi_otel import PayiInstrumentor, _settings, get_context, track_context
from payi_otel._instrumentor import after_instrumentors, before_instrumentors
from payi_otel._log import reset_log_once
from payi_otel._model.dialects import PAYI_PROXY
from payi_otel._model.parameters import BAGGAGE_ACCEPT_DEFAULT
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import CallRecord
from payi_otel._settings import add_observer

Instrument = Callable[..., PayiInstrumentor]


def test_the_settings_are_frozen(instrument: Instrument) -> None:
    instrument({"user_id": "u"})
    settings = _settings.current
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.scope_spans = False  # type: ignore[misc]
    assert _settings.current is settings


def test_uninstrument_puts_the_default_back_and_each_instrument_is_a_new_version(
    instrument: Instrument, otel: Otel
) -> None:
    instrumentor = instrument(
        {"user_id": "u"}, propagate_baggage=True, header_dialect="payi-proxy", scope_spans=False
    )
    first = _settings.current
    assert first.instrumented and first.propagate_baggage and not first.scope_spans
    assert first.wire == WirePolicy(PAYI_PROXY)
    assert first.effective.params["user_id"] == "u"
    assert first.tracer_provider is otel.provider

    instrumentor.uninstrument()
    default = _settings.current
    assert default.version > first.version
    assert not default.instrumented and default.effective.params == {}
    assert not default.propagate_baggage and default.scope_spans
    assert default.wire == WirePolicy() and default.baggage_accept == BAGGAGE_ACCEPT_DEFAULT
    assert default.tracer_provider is None and default.observers == ()
    assert dict(get_context()) == {}

    instrument({"user_id": "v"})
    second = _settings.current
    assert second.version > default.version
    assert second.instrumented and not second.propagate_baggage and second.scope_spans
    assert get_context()["user_id"] == "v"


def test_a_scope_entered_before_reinstrumenting_gets_the_new_global_level(
    instrument: Instrument,
) -> None:
    instrumentor = instrument({"user_id": "first", "account_name": "a"})
    with track_context(limit_ids=["l"]):
        assert get_context()["account_name"] == "a"
        instrumentor.uninstrument()
        instrument({"user_id": "second"})
        assert get_context()["user_id"] == "second"
        assert "account_name" not in get_context()
        assert get_context()["limit_ids"] == ["l"]


def test_an_observer_is_added_to_the_settings_in_force_and_removed(
    instrument: Instrument,
) -> None:
    instrument()
    before = _settings.current
    [cost] = before.observers  # the instrumentor's cost observer

    def observe(record: CallRecord) -> None:
        return None

    remove = add_observer(observe)
    added = _settings.current
    assert added.observers == (cost, observe)
    # Same global level: caches keyed on the version stay valid.
    assert added.version == before.version and added.effective is before.effective
    remove()
    assert _settings.current.observers == (cost,)


# --- a variable that does not parse --------------------------------------------------------

BAD = {
    "PAYI_USE_CASE_VERSION": "two",
    "PAYI_PROPAGATE_BAGGAGE": "maybe",
    "PAYI_METRICS_USER_ID": "maybe",
    "PAYI_NATIVE_ATTRIBUTION": "maybe",
    "PAYI_SCOPE_SPANS": "maybe",
    "PAYI_SCOPE_SPAN_ATTRIBUTES": "all",
    "PAYI_BAGGAGE_ACCEPT": "no_such_parameter",
    "PAYI_HEADER_DIALECT": "x-other",
    "PAYI_HEADER_HOSTS": "https://gateway/v1",
    "PAYI_MODEL_MAPPINGS": "[not json",  # issue 18
}


@pytest.mark.parametrize("variable", sorted(BAD))
def test_a_bad_variable_raises_in_code(variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        _settings.build({"caller_file": "<test>"}, environ={variable: BAD[variable]})


@pytest.mark.parametrize("variable", sorted(BAD))
def test_a_bad_variable_is_one_error_line_under_zero_code_and_the_default_applies(
    variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {variable: BAD[variable], "PAYI_USER_ID": "u"}
    with caplog.at_level(logging.ERROR, logger="payi_otel"):
        settings = _settings.build({"caller_file": "<test>"}, lenient=True, environ=environ)
    [record] = caplog.records
    assert variable in record.getMessage()
    assert record.getMessage().endswith(("the variable is ignored", "the default is used"))
    default = _settings.default()
    for field in (
        "propagate_baggage",
        "metrics_user_id",
        "native_attribution",
        "scope_spans",
        "effective_scope_spans",
        "baggage_accept",
        "wire",
        "model_mappings",
    ):
        assert getattr(settings, field) == getattr(default, field), field
    assert settings.effective.params == {"user_id": "u"}


#: A valid value of each variable read together with another (what a bad neighbour must
#: leave in force).
GOOD = {
    "PAYI_BAGGAGE_ACCEPT": ("baggage_accept", "user_id"),
    "PAYI_HEADER_HOSTS": ("wire", "gateway.example"),
    "PAYI_HEADER_DIALECT": ("wire", "payi-proxy"),
}


@pytest.mark.parametrize(
    ("bad", "good"),
    [
        ("PAYI_BAGGAGE_ACCEPT", "PAYI_HEADER_HOSTS"),
        ("PAYI_HEADER_HOSTS", "PAYI_BAGGAGE_ACCEPT"),
        # (a review: one policy read in one go, so a bad one reset the other too)
        ("PAYI_HEADER_HOSTS", "PAYI_HEADER_DIALECT"),
        ("PAYI_HEADER_DIALECT", "PAYI_HEADER_HOSTS"),
    ],
)
def test_a_bad_variable_under_zero_code_leaves_its_valid_neighbours_in_force(
    bad: str, good: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad PAYI_BAGGAGE_ACCEPT once reset the header allow-list too (read in one go), and
    the reverse: each variable falls back alone."""
    field, value = GOOD[good]
    environ = {bad: BAD[bad], good: value}
    with caplog.at_level(logging.ERROR, logger="payi_otel"):
        settings = _settings.build({"caller_file": "<test>"}, lenient=True, environ=environ)
    [record] = caplog.records
    assert bad in record.getMessage()
    alone = _settings.build({"caller_file": "<test>"}, environ={good: value})
    assert getattr(settings, field) == getattr(alone, field) != getattr(_settings.default(), field)


def test_a_bad_keyword_argument_raises_even_under_zero_code() -> None:
    with pytest.raises(TypeError, match="scope_spans"):
        _settings.build({"scope_spans": "no"}, lenient=True, environ={})


def test_the_zero_code_hooks_make_instrumenting_lenient(
    instrument: Instrument, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PAYI_SCOPE_SPANS", "maybe")
    with pytest.raises(ValueError, match="PAYI_SCOPE_SPANS"):
        instrument()
    assert not _settings.current.instrumented
    before_instrumentors()
    try:
        with caplog.at_level(logging.ERROR, logger="payi_otel"):
            instrument(genai_spans=False)
    finally:
        after_instrumentors()
    [record] = caplog.records
    assert "PAYI_SCOPE_SPANS" in record.getMessage()
    assert _settings.current.instrumented and _settings.current.scope_spans
    # Out of the loader, code raises again.
    with pytest.raises(ValueError, match="PAYI_SCOPE_SPANS"):
        _settings.build({"caller_file": "<test>"})


@pytest.mark.parametrize(
    ("misspelt", "meant"),
    [("PAYI_USERID", "PAYI_USER_ID"), ("PAYI_HEADERS_HOSTS", "PAYI_HEADER_HOSTS")],
)
def test_a_misspelt_variable_is_one_warning_naming_the_one_meant(
    misspelt: str, meant: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``PAYI_USERID=u1`` read by nobody billed every call without its user, with nothing
    said (a review); another tool's ``PAYI_*`` variable is left alone."""
    reset_log_once()
    environ = {misspelt: "x", "PAYI_LOG_LEVEL": "debug"}
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        _settings.build({"caller_file": "<test>"}, environ=environ)
        _settings.build({"caller_file": "<test>"}, environ=environ)
    [record] = caplog.records
    assert misspelt in record.getMessage() and f"did you mean {meant}" in record.getMessage()


@pytest.mark.parametrize(
    ("main", "name"),
    [
        ("/srv/app.py", "app"),
        ("/srv/myapp/__main__.py", "myapp"),  # python -m myapp
        ("-c", None),  # python -c, and a multiprocessing spawn child under the loader
        ("<stdin>", None),
    ],
)
def test_the_default_use_case_is_the_programs_name(main: str, name: Optional[str]) -> None:
    """The default use case names the program: a spawn child under ``opentelemetry-instrument``
    was filed under use case ``-c``, one id per child, and ``python -m pkg`` under ``__main__``
    (a review)."""
    settings = _settings.build({"caller_file": main}, environ={})
    assert settings.effective.params.get("use_case_name") == name


def test_payi_instrument_after_the_loader_says_where_its_settings_go(
    instrument: Instrument, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``opentelemetry-instrument`` the loader has instrumented already: the app's own
    ``payi_instrument(...)`` changes nothing, and the WARNING says why and what to do (it
    read as if the app had called it twice)."""
    from payi_otel import payi_instrument

    before_instrumentors()
    try:
        instrument(genai_spans=False)
    finally:
        after_instrumentors()
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        payi_instrument({"user_id": "from-config"})
    [record] = [r for r in caplog.records if "already called" in r.getMessage()]
    assert "opentelemetry-instrument" in record.getMessage()
    assert "PAYI_* variables" in record.getMessage()
    assert "user_id" not in get_context()
