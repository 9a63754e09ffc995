"""Bad input for every parameter kind: the error type, and a message naming the parameter."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from payi_otel import ParameterError, track, track_context
from payi_otel._model.codec import parse_value
from payi_otel._model.parameters import PARAMETERS, Kind

STRINGS = [n for n, k in PARAMETERS.items() if k is Kind.STRING]
LISTS = [n for n, k in PARAMETERS.items() if k is Kind.LIST]
DICTS = [n for n, k in PARAMETERS.items() if k is Kind.DICT]

BAD: list[tuple[str, Any, type[Exception]]] = []
for _name in STRINGS:
    BAD += [
        (_name, 5, TypeError),
        (_name, b"bytes", TypeError),
        (_name, ["a"], TypeError),
        (_name, "a\r\nb", ValueError),
        (_name, "a\nb", ValueError),
        (_name, "a\x00b", ValueError),
    ]
for _name in LISTS:
    BAD += [
        (_name, "bare", TypeError),
        (_name, [1], TypeError),
        (_name, {"a"}, TypeError),
        (_name, ["a,b"], ValueError),
        (_name, ["a\nb"], ValueError),
        (_name, [" "], ValueError),
    ]
for _name in DICTS:
    BAD += [
        (_name, "x", TypeError),
        (_name, [("a", "b")], TypeError),
        (_name, {1: "a"}, TypeError),
        (_name, {"a": 1}, TypeError),
        (_name, {"a": "x\ny"}, ValueError),
        (_name, {"a\r": "x"}, ValueError),
        (_name, {"": "x"}, ValueError),
    ]
BAD += [
    ("use_case_version", "1", TypeError),
    ("use_case_version", True, TypeError),
    ("use_case_version", 1.5, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD)
def test_bad_value_raises_naming_the_parameter(name: str, value: Any, error: type) -> None:
    with pytest.raises(error, match=name) as info:
        track_context(**{name: value})
    assert isinstance(info.value, ParameterError)
    with pytest.raises(error, match=name):
        track(**{name: value})


def test_unknown_parameter_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="user"):
        track_context(user="x")
    with pytest.raises(TypeError, match="limit_id"):
        track(limit_id=["x"])


def test_bad_input_raises_before_any_scope_or_span(otel: Any) -> None:
    with pytest.raises(ValueError), track_context(user_id="a\nb"):
        pass  # pragma: no cover
    assert otel.spans() == []


def test_none_means_unset_and_tuples_are_lists() -> None:
    ctx = track_context(user_id=None, limit_ids=("a", "b"))
    assert ctx._params == {"limit_ids": ("a", "b")}


def test_non_ascii_is_a_valid_value() -> None:
    track_context(user_id="ユーザー", request_properties={"ключ": "значение"})


@pytest.mark.parametrize(
    ("name", "text", "what"),
    [
        ("use_case_version", "five", "x-payi-use-case-version"),
        ("use_case_version", "", "x-payi-use-case-version"),
        ("use_case_properties", "{not json", "x-payi-use-case-properties"),
        ("use_case_properties", "[1]", "x-payi-use-case-properties"),
        ("request_properties", '{"a": 1}', "x-payi-request-properties"),
        ("user_id", "a\r\nb", "x-payi-user-id"),
    ],
)
def test_unparseable_text_names_its_source(name: str, text: str, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        parse_value(name, text, what=what)


def test_track_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="function"):
        track()(42)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("userid", "user_id"),
        ("UserId", "user_id"),
        ("limits", "limit_ids"),
        ("use_case_nme", "use_case_name"),
        ("accountname", "account_name"),
    ],
)
def test_a_mistyped_keyword_gets_a_did_you_mean(typed: str, meant: str) -> None:
    with pytest.raises(TypeError, match=rf"{typed!r} \(did you mean {meant!r}\?\)"):
        track_context(**{typed: "x"})
    with pytest.raises(TypeError, match=rf"did you mean {meant!r}"):
        track(**{typed: "x"})


def test_errors_are_shown_under_their_public_names() -> None:
    with pytest.raises(TypeError) as raised:
        track_context(userid="x")
    assert f"{type(raised.value).__module__}.{type(raised.value).__qualname__}" == (
        "payi_otel.ParameterTypeError"
    )
    assert "_parameters" not in "".join(
        traceback.format_exception_only(type(raised.value), raised.value)
    )
    import payi_otel

    for error in (
        payi_otel.ParameterError,
        payi_otel.ParameterTypeError,
        payi_otel.ParameterValueError,
    ):
        assert getattr(payi_otel, error.__name__) is error
        assert error.__module__ == "payi_otel"
