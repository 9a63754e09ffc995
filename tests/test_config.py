"""payi_instrument(): the global level from config over PAYI_* variables, idempotence."""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

import pytest

from payi_otel import PayiInstrumentor, get_context, payi_instrument, track_context
from payi_otel._model.parameters import ENV_NAMES

Instrument = Callable[..., PayiInstrumentor]


def test_default_use_case_is_the_caller_file_stem_with_fresh_id(instrument: Instrument) -> None:
    instrument(caller_file="/srv/support_bot.py")
    ctx = get_context()
    assert ctx["use_case_name"] == "support_bot"
    assert uuid.UUID(ctx["use_case_id"]).version == 4  # type: ignore[arg-type]


def test_payi_instrument_uses_the_calling_file(instrument: Instrument) -> None:
    PayiInstrumentor().uninstrument()
    payi_instrument()
    assert get_context()["use_case_name"] == "test_config"


def test_config_sets_the_global_context(instrument: Instrument) -> None:
    instrument({"use_case_name": "App", "limit_ids": ["g"], "user_id": "global_user"})
    assert get_context()["use_case_name"] == "App"
    with track_context(limit_ids=["t"]):
        assert get_context()["limit_ids"] == ["g", "t"]
        assert get_context()["user_id"] == "global_user"


def test_every_env_variable(instrument: Instrument, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "PAYI_USE_CASE_NAME": "env_uc",
        "PAYI_USE_CASE_ID": "env_id",
        "PAYI_USE_CASE_VERSION": "7",
        "PAYI_USE_CASE_STEP": "env_step",
        "PAYI_USE_CASE_PROPERTIES": '{"a": "1"}',
        "PAYI_EXPERIENCE_NAME": "exp",
        "PAYI_EXPERIENCE_ID": "exp_id",
        "PAYI_LIMIT_IDS": "l1, l2",
        "PAYI_REQUEST_TAGS": "t1",
        "PAYI_USER_ID": "env_user",
        "PAYI_ACCOUNT_NAME": "acct",
        "PAYI_REQUEST_PROPERTIES": '{"r": "2"}',
        "PAYI_PRICE_AS_CATEGORY": "cat",
        "PAYI_PRICE_AS_RESOURCE": "res",
        "PAYI_RESOURCE_SCOPE": "global",
        "PAYI_LOG_PROMPT_AND_RESPONSE": "Off",
    }
    assert set(values) == set(ENV_NAMES.values())
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    instrument()
    assert dict(get_context()) == {
        "use_case_name": "env_uc",
        "use_case_id": "env_id",
        "use_case_version": 7,
        "use_case_step": "env_step",
        "use_case_properties": {"a": "1"},
        "experience_name": "exp",
        "experience_id": "exp_id",
        "limit_ids": ["l1", "l2"],
        "request_tags": ["t1"],
        "user_id": "env_user",
        "account_name": "acct",
        "request_properties": {"r": "2"},
        "price_as_category": "cat",
        "price_as_resource": "res",
        "resource_scope": "global",
        "log_prompt_and_response": False,
    }


def test_config_wins_over_env(instrument: Instrument, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYI_USER_ID", "env_user")
    monkeypatch.setenv("PAYI_USE_CASE_NAME", "env_uc")
    monkeypatch.setenv("PAYI_USE_CASE_ID", "env_id")
    instrument({"user_id": "config_user", "use_case_name": "config_uc"})
    ctx = get_context()
    assert ctx["user_id"] == "config_user"
    assert ctx["use_case_name"] == "config_uc"
    assert ctx["use_case_id"] != "env_id"  # a different use case does not keep env's id


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PAYI_USE_CASE_VERSION", "v1"),
        ("PAYI_USE_CASE_PROPERTIES", "{bad"),
        ("PAYI_REQUEST_PROPERTIES", '["list"]'),
        ("PAYI_PROPAGATE_BAGGAGE", "maybe"),
        ("PAYI_USER_ID", "a\nb"),
    ],
)
def test_unparseable_env_is_a_value_error_naming_it(
    instrument: Instrument, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=var):
        instrument()
    assert not PayiInstrumentor().is_instrumented_by_opentelemetry


def test_bad_config_raises(instrument: Instrument) -> None:
    with pytest.raises(TypeError, match="limit_ids"):
        instrument({"limit_ids": "bare"})
    with pytest.raises(TypeError, match="unexpected"):
        instrument({"nope": "x"})
    with pytest.raises(TypeError, match="config"):
        instrument(["not", "a", "mapping"])


def test_second_call_warns_and_changes_nothing(
    instrument: Instrument, caplog: pytest.LogCaptureFixture
) -> None:
    PayiInstrumentor().uninstrument()
    payi_instrument(config={"user_id": "first"})
    with caplog.at_level(logging.WARNING, logger="payi_otel"):
        payi_instrument(config={"user_id": "second"})
    assert get_context()["user_id"] == "first"
    assert any("already" in r.getMessage() for r in caplog.records)


def test_scopes_work_without_payi_instrument(otel: Any) -> None:
    PayiInstrumentor().uninstrument()
    with track_context(user_id="solo"):
        assert dict(get_context()) == {"user_id": "solo"}
    assert [s.name for s in otel.spans()] == ["payi.track_context"]


def test_empty_env_name_turns_default_use_case_off(
    instrument: Instrument, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYI_USE_CASE_NAME", "")
    monkeypatch.setenv("PAYI_USE_CASE_VERSION", "")
    instrument()
    assert dict(get_context()) == {"use_case_name": ""}
