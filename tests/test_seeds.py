"""Every scope example of ../shared/spec/seeds/parameter_precedence.txt with a ``Result:``,
one test each, named after its section. Values are checked twice: with ``get_context()``
inside the scope and on the scope's span attributes.

(The header examples - "Headers with Decorated Functions" and the Triple Combination's
Example 1 - need a real GenAI call and live in test_genai_seeds.py.)
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from fixtures_otel import Otel, payi_attrs

from payi_otel import PayiInstrumentor, get_context, track, track_context

pytestmark = pytest.mark.usefixtures("effective_scope_spans")


@pytest.fixture
def effective_scope_spans(instrument: Callable[..., PayiInstrumentor]) -> PayiInstrumentor:
    """No global level, and scope spans carrying the whole effective set (not the default:
    the default, what the scope itself set, is tested in test_spanless.py), so each example
    checks get_context() and the span."""
    return instrument(caller_file="<test>", scope_span_attributes="effective")


def snapshot(**expected: Any) -> dict[str, Any]:
    """get_context() restricted to the keys a seed example mentions."""
    ctx = get_context()
    return {k: ctx.get(k) for k in expected}


def span_value(otel: Otel, name: str, attribute: str) -> Any:
    return payi_attrs(otel.one(name)).get(attribute)


# --- Nested @track Decorators -------------------------------------------------------------


def test_nested_track_decorators(otel: Otel) -> None:
    seen: dict[str, Any] = {}

    @track(limit_ids=["limit1"])
    def outer_function() -> None:
        def inner_function0() -> None:
            seen["inner_function0"] = get_context().get("limit_ids")

        @track()
        def inner_function1() -> None:
            seen["inner_function1"] = get_context().get("limit_ids")

        @track(limit_ids=[])
        def inner_function2() -> None:
            seen["inner_function2"] = get_context().get("limit_ids")

        @track(limit_ids=["limit2"])
        def inner_function3() -> None:
            seen["inner_function3"] = get_context().get("limit_ids")

        inner_function0()
        inner_function1()
        inner_function2()
        inner_function3()

    outer_function()
    assert seen == {
        "inner_function0": ["limit1"],
        "inner_function1": ["limit1"],
        "inner_function2": [],
        "inner_function3": ["limit1", "limit2"],
    }
    q = "test_nested_track_decorators.<locals>.outer_function.<locals>."
    assert span_value(otel, q + "inner_function1", "payi.limit_ids") == ["limit1"]
    # Cleared: no attribute at all.
    assert span_value(otel, q + "inner_function2", "payi.limit_ids") is None
    assert span_value(otel, q + "inner_function3", "payi.limit_ids") == ["limit1", "limit2"]
    outer = otel.one("test_nested_track_decorators.<locals>.outer_function")
    assert payi_attrs(outer) == {"payi.limit_ids": ["limit1"]}
    assert outer.attributes is not None and outer.attributes["payi.scope"] == "track"


# --- Nested track_context Calls -----------------------------------------------------------


def test_nested_track_context_calls(otel: Otel) -> None:
    with track_context(limit_ids=["limit1"], user_id="user1"):
        with track_context(limit_ids=[], user_id="", use_case_step="cleared"):
            assert snapshot(limit_ids=1, user_id=1) == {"limit_ids": [], "user_id": ""}
        with track_context(limit_ids=["limit2"], use_case_step="two"):
            assert get_context()["limit_ids"] == ["limit1", "limit2"]
            with track_context(limit_ids=["limit3"], use_case_step="three"):
                assert get_context()["limit_ids"] == ["limit1", "limit2", "limit3"]
    assert payi_attrs(otel.one("cleared")) == {}
    assert span_value(otel, "two", "payi.limit_ids") == ["limit1", "limit2"]
    assert span_value(otel, "three", "payi.limit_ids") == ["limit1", "limit2", "limit3"]
    assert span_value(otel, "three", "payi.user_id") == "user1"


# --- Combined @track and track_context: String Parameters ---------------------------------


def test_combined_string_parameters(otel: Otel) -> None:
    seen: list[Any] = []

    @track(user_id="decorator_user")
    def function_with_context() -> None:
        seen.append(get_context()["user_id"])
        with track_context(user_id="context_user", use_case_step="s1"):
            seen.append(get_context()["user_id"])
        with track_context(user_id=None, use_case_step="s2"):
            seen.append(get_context()["user_id"])
        with track_context(user_id="", use_case_step="s3"):
            seen.append(get_context()["user_id"])

    function_with_context()
    assert seen == ["decorator_user", "context_user", "decorator_user", ""]
    assert span_value(otel, "s1", "payi.user_id") == "context_user"
    assert span_value(otel, "s2", "payi.user_id") == "decorator_user"
    assert span_value(otel, "s3", "payi.user_id") is None


# --- Combined @track and track_context: List Parameters -----------------------------------


def test_combined_list_parameters(otel: Otel) -> None:
    seen: list[Any] = []

    @track(limit_ids=["decorator_limit"])
    def function_with_context() -> None:
        seen.append(get_context()["limit_ids"])
        with track_context(limit_ids=["context_limit"], use_case_step="combine"):
            seen.append(get_context()["limit_ids"])
        with track_context(limit_ids=[], use_case_step="empty"):
            seen.append(get_context()["limit_ids"])

    function_with_context()
    assert seen == [["decorator_limit"], ["decorator_limit", "context_limit"], []]
    assert span_value(otel, "combine", "payi.limit_ids") == ["decorator_limit", "context_limit"]
    assert span_value(otel, "empty", "payi.limit_ids") is None


# --- Combined @track and track_context: Numeric Parameters --------------------------------


def test_combined_numeric_parameters(otel: Otel) -> None:
    seen: list[Any] = []

    @track(use_case_name="numeric", use_case_version=1)
    def function_with_numeric() -> None:
        seen.append(get_context()["use_case_version"])
        with track_context(use_case_version=2, use_case_step="v2"):
            seen.append(get_context()["use_case_version"])

    function_with_numeric()
    assert seen == [1, 2]
    assert span_value(otel, "v2", "payi.use_case.version") == 2
    outer = otel.one("test_combined_numeric_parameters.<locals>.function_with_numeric")
    assert payi_attrs(outer)["payi.use_case.version"] == 1


# --- Combined @track and track_context: Name-ID Pairs -------------------------------------


def test_combined_name_id_pairs(otel: Otel) -> None:
    seen: dict[str, dict[str, Any]] = {}

    @track(use_case_name="decorator_case", use_case_id="decorator_id")
    def function_with_context() -> None:
        seen["default"] = snapshot(use_case_name=1, use_case_id=1)
        with track_context(use_case_name="context_case"):
            seen["name_only"] = snapshot(use_case_name=1, use_case_id=1)
        with track_context(use_case_id="context_id", use_case_step="id_only"):
            seen["id_only"] = snapshot(use_case_name=1, use_case_id=1)
        with track_context(
            use_case_name="context_case", use_case_id="context_id", use_case_step="both"
        ):
            seen["both"] = snapshot(use_case_name=1, use_case_id=1)

    function_with_context()
    assert seen["default"] == {"use_case_name": "decorator_case", "use_case_id": "decorator_id"}
    assert seen["name_only"]["use_case_name"] == "context_case"
    new_id = seen["name_only"]["use_case_id"]
    assert new_id != "decorator_id" and uuid.UUID(new_id).version == 4
    assert seen["id_only"] == {"use_case_name": "decorator_case", "use_case_id": "context_id"}
    assert seen["both"] == {"use_case_name": "context_case", "use_case_id": "context_id"}
    assert payi_attrs(otel.one("context_case")) == {
        "payi.use_case.name": "context_case",
        "payi.use_case.id": new_id,
    }
    assert payi_attrs(otel.one("id_only"))["payi.use_case.id"] == "context_id"
    assert payi_attrs(otel.one("both"))["payi.use_case.name"] == "context_case"


# --- Context Manager Calling a Decorated Function -----------------------------------------


def test_context_manager_calling_a_decorated_function(otel: Otel) -> None:
    seen: list[dict[str, Any]] = []

    @track(limit_ids=["decorator_limit"], user_id="decorator_user")
    def decorated_function() -> None:
        seen.append(snapshot(limit_ids=1, user_id=1))

    decorated_function()
    with track_context(limit_ids=["context_limit"], user_id="context_user"):
        decorated_function()
    assert seen == [
        {"limit_ids": ["decorator_limit"], "user_id": "decorator_user"},
        {"limit_ids": ["decorator_limit", "context_limit"], "user_id": "context_user"},
    ]
    direct, inside = otel.named(
        "test_context_manager_calling_a_decorated_function.<locals>.decorated_function"
    )
    assert payi_attrs(direct) == {
        "payi.limit_ids": ["decorator_limit"],
        "payi.user_id": "decorator_user",
    }
    assert payi_attrs(inside) == {
        "payi.limit_ids": ["decorator_limit", "context_limit"],
        "payi.user_id": "context_user",
    }


# --- Triple Combination Example (the scope parts; Example 1 is in test_genai_seeds.py) -----


def test_triple_combination_example(otel: Otel) -> None:
    seen: dict[str, dict[str, Any]] = {}
    keys = {"limit_ids": 1, "user_id": 1, "use_case_name": 1}

    @track(limit_ids=["limit1"], user_id="default_user")
    def complex_function() -> None:
        seen["decorator"] = snapshot(limit_ids=1, user_id=1)
        with track_context(limit_ids=["limit2"], use_case_name="reporting"):
            seen["first_level"] = snapshot(**keys)
            with track_context(limit_ids=[], user_id="", use_case_step="example2"):
                seen["example2"] = snapshot(**keys)
            with track_context(
                limit_ids=["limit4"], user_id="nested_user", use_case_step="example3"
            ):
                seen["example3"] = snapshot(**keys)

    complex_function()
    assert seen["decorator"] == {"limit_ids": ["limit1"], "user_id": "default_user"}
    assert seen["first_level"] == {
        "limit_ids": ["limit1", "limit2"],
        "user_id": "default_user",
        "use_case_name": "reporting",
    }
    assert seen["example2"] == {"limit_ids": [], "user_id": "", "use_case_name": "reporting"}
    assert seen["example3"] == {
        "limit_ids": ["limit1", "limit2", "limit4"],
        "user_id": "nested_user",
        "use_case_name": "reporting",
    }
    first = payi_attrs(otel.one("reporting"))
    assert first["payi.limit_ids"] == ["limit1", "limit2"]
    assert first["payi.user_id"] == "default_user"
    ex2 = payi_attrs(otel.one("example2"))
    assert "payi.limit_ids" not in ex2 and "payi.user_id" not in ex2
    assert ex2["payi.use_case.name"] == "reporting"
    # The step names the span and is part of the same use case (same id as its parent).
    assert ex2["payi.use_case.id"] == first["payi.use_case.id"]
    ex3 = payi_attrs(otel.one("example3"))
    assert ex3["payi.limit_ids"] == ["limit1", "limit2", "limit4"]
    assert ex3["payi.user_id"] == "nested_user"


# --- track_context.txt: Basic Example: Tracking Users --------------------------------------


def test_basic_example_tracking_users(otel: Otel) -> None:
    def my_function(user_id: str) -> Any:
        with track_context(user_id=user_id):
            return get_context()["user_id"]

    assert my_function("alice") == "alice"
    assert "user_id" not in get_context()
    span = otel.one("payi.track_context")
    assert payi_attrs(span) == {"payi.user_id": "alice"}
    assert span.attributes is not None and span.attributes["payi.scope"] == "track_context"
