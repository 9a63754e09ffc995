"""Every seed example that makes a GenAI call, with a real call to the local server through
each provider's client (``fixtures_genai.SEED_CALLS``: openai, anthropic, and issue 18's
providers): the headers the server received and the GenAI span's attributes, against the
seed's Result.

(The ``genai`` fixture also checks span attributes == headers sent for every call.)
"""

from __future__ import annotations

import uuid
from typing import Optional

import pytest
from fixtures_genai import SEED_CALLS, GenAI


@pytest.fixture(params=sorted(SEED_CALLS))
def sdk(request: pytest.FixtureRequest) -> str:
    """The provider each scenario runs over (``SEED_CALLS``)."""
    return str(request.param)


def call(
    genai: GenAI, sdk: str, extra_headers: Optional[dict[str, str]] = None, prompt: str = "Hello"
) -> str:
    return SEED_CALLS[sdk](genai, extra_headers, prompt)


# --- Headers with Decorated Functions --------------------------------------------------------


def test_headers_with_decorated_functions(genai: GenAI, sdk: str) -> None:
    from payi_otel import track

    genai.reinstrument()  # as in an app: the global context's default use case is "app"

    @track(limit_ids=["limit1"], user_id="default_user")
    def function_with_headers() -> None:
        call(genai, sdk, extra_headers={"x-payi-limit-ids": "", "x-payi-user-id": ""})
        call(
            genai,
            sdk,
            extra_headers={"x-payi-limit-ids": "header_limit", "x-payi-use-case-version": "5"},
        )

    function_with_headers()
    empty, non_empty = genai.sent()
    # limit_ids = [] and user_id = "": cleared, so neither header is sent.
    assert "x-payi-limit-ids" not in empty and "x-payi-user-id" not in empty
    assert non_empty["x-payi-limit-ids"] == "limit1,header_limit"
    assert non_empty["x-payi-use-case-version"] == "5"
    assert non_empty["x-payi-user-id"] == "default_user"
    span_empty, span_full = genai.span_attrs()
    assert "payi.limit_ids" not in span_empty and "payi.user_id" not in span_empty
    assert span_full["payi.limit_ids"] == ["limit1", "header_limit"]
    assert span_full["payi.user_id"] == "default_user"
    assert span_full["payi.use_case.version"] == 5
    assert span_full["payi.use_case.name"] == "app"


def test_headers_version_overrides_an_inherited_version(genai: GenAI, sdk: str) -> None:
    from payi_otel import track

    @track(use_case_name="uc", use_case_version=1)
    def f() -> None:
        call(genai, sdk, extra_headers={"x-payi-use-case-version": "5"})
        call(genai, sdk)

    f()
    assert [h["x-payi-use-case-version"] for h in genai.sent()] == ["5", "1"]
    assert [a["payi.use_case.version"] for a in genai.span_attrs()] == [5, 1]


# --- Triple Combination Example --------------------------------------------------------------


def test_triple_combination_example(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(limit_ids=["limit1"], user_id="default_user")
    def complex_function() -> None:
        with track_context(limit_ids=["limit2"], use_case_name="reporting"):
            call(
                genai,
                sdk,
                extra_headers={"x-payi-limit-ids": "limit3", "x-payi-user-id": "specific_user"},
            )
            with track_context(limit_ids=[], user_id=""):
                call(genai, sdk)
            with track_context(limit_ids=["limit4"], user_id="nested_user"):
                call(genai, sdk)

    complex_function()
    ex1, ex2, ex3 = genai.sent()
    assert ex1["x-payi-limit-ids"] == "limit1,limit2,limit3"
    assert ex1["x-payi-user-id"] == "specific_user"
    assert ex1["x-payi-use-case-name"] == "reporting"
    assert "x-payi-limit-ids" not in ex2 and "x-payi-user-id" not in ex2
    assert ex2["x-payi-use-case-name"] == "reporting"
    assert ex3["x-payi-limit-ids"] == "limit1,limit2,limit4"
    assert ex3["x-payi-user-id"] == "nested_user"
    assert ex3["x-payi-use-case-name"] == "reporting"
    # One use case ("reporting"), one id for all three calls.
    assert ex1["x-payi-use-case-id"] == ex2["x-payi-use-case-id"] == ex3["x-payi-use-case-id"]
    s1, s2, s3 = genai.span_attrs()
    assert s1["payi.limit_ids"] == ["limit1", "limit2", "limit3"]
    assert s1["payi.user_id"] == "specific_user"
    assert "payi.limit_ids" not in s2 and "payi.user_id" not in s2
    assert s3["payi.limit_ids"] == ["limit1", "limit2", "limit4"]
    assert s3["payi.user_id"] == "nested_user"


# --- Combined @track and track_context (each example's client call) -------------------------


def test_combined_string_parameters_calls(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(user_id="decorator_user")
    def function_with_context() -> None:
        with track_context(user_id="context_user"):
            call(genai, sdk)
        with track_context(user_id=None):
            call(genai, sdk)
        with track_context(user_id=""):
            call(genai, sdk)

    function_with_context()
    assert genai.sent() == [
        {"x-payi-user-id": "context_user"},
        {"x-payi-user-id": "decorator_user"},
        {},
    ]


def test_combined_list_parameters_calls(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(limit_ids=["decorator_limit"])
    def function_with_context() -> None:
        with track_context(limit_ids=["context_limit"]):
            call(genai, sdk)
        with track_context(limit_ids=[]):
            call(genai, sdk)

    function_with_context()
    assert genai.sent() == [{"x-payi-limit-ids": "decorator_limit,context_limit"}, {}]


def test_combined_numeric_parameters_calls(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(use_case_name="numbers", use_case_version=1)
    def function_with_numeric() -> None:
        call(genai, sdk)
        with track_context(use_case_version=2):
            call(genai, sdk)

    function_with_numeric()
    first, second = genai.sent()
    assert first["x-payi-use-case-version"] == "1"
    assert second["x-payi-use-case-version"] == "2"
    assert [a["payi.use_case.version"] for a in genai.span_attrs()] == [1, 2]


def test_combined_name_id_pairs_calls(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(use_case_name="decorator_case", use_case_id="decorator_id")
    def function_with_context() -> None:
        with track_context(use_case_name="context_case"):
            call(genai, sdk)
            call(genai, sdk)
        with track_context(use_case_id="context_id"):
            call(genai, sdk)
        with track_context(use_case_name="context_case", use_case_id="context_id"):
            call(genai, sdk)

    function_with_context()
    new1, new2, id_only, both = genai.sent()
    assert new1["x-payi-use-case-name"] == "context_case"
    assert uuid.UUID(new1["x-payi-use-case-id"]).version == 4
    assert new1 == new2  # the new id is made once per scope, stable for every call in it
    assert id_only == {"x-payi-use-case-name": "decorator_case", "x-payi-use-case-id": "context_id"}
    assert both == {"x-payi-use-case-name": "context_case", "x-payi-use-case-id": "context_id"}


def test_context_manager_calling_a_decorated_function_calls(genai: GenAI, sdk: str) -> None:
    from payi_otel import track, track_context

    @track(limit_ids=["decorator_limit"], user_id="decorator_user")
    def decorated_function() -> None:
        call(genai, sdk)

    decorated_function()
    with track_context(limit_ids=["context_limit"], user_id="context_user"):
        decorated_function()
    assert genai.sent() == [
        {"x-payi-limit-ids": "decorator_limit", "x-payi-user-id": "decorator_user"},
        {"x-payi-limit-ids": "decorator_limit,context_limit", "x-payi-user-id": "context_user"},
    ]
    assert genai.span_attrs() == [
        {"payi.limit_ids": ["decorator_limit"], "payi.user_id": "decorator_user"},
        {"payi.limit_ids": ["decorator_limit", "context_limit"], "payi.user_id": "context_user"},
    ]


def test_basic_example_tracking_users_call(genai: GenAI, sdk: str) -> None:
    from payi_otel import track_context

    def my_function(prompt: str, user_id: str) -> str:
        with track_context(user_id=user_id):
            return call(genai, sdk, prompt=prompt)

    assert my_function("Hi", "user_42") == "echo: Hi"
    assert genai.sent() == [{"x-payi-user-id": "user_42"}]


def test_global_context_is_the_lowest_level(genai: GenAI, sdk: str) -> None:
    from payi_otel import track

    genai.reinstrument(
        {"limit_ids": ["global_limit"], "user_id": "global_user"}, caller_file="/srv/my_app.py"
    )

    @track(limit_ids=["feature"])
    def feature() -> None:
        call(genai, sdk)

    call(genai, sdk)
    feature()
    plain, tracked = genai.sent()
    assert plain["x-payi-use-case-name"] == "my_app"  # default use case: the module's name
    assert plain["x-payi-limit-ids"] == "global_limit"
    assert tracked["x-payi-limit-ids"] == "global_limit,feature"
    assert tracked["x-payi-user-id"] == "global_user"
    assert plain["x-payi-use-case-id"] == tracked["x-payi-use-case-id"]
