"""The merge tables of docs/precedence.md, row by row, on the engine itself and through
nested scopes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from payi_otel import get_context, track, track_context
from payi_otel._model.merge import Level, fold, merge, new_level
from payi_otel._model.parameters import Params


def over(lower: Params, upper: Params) -> Params:
    return merge(lower, new_level(upper))


def is_uuid4(text: Any) -> bool:
    return isinstance(text, str) and uuid.UUID(text).version == 4


# --- generic kinds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "expected"),
    [
        ({"user_id": "a"}, {}, {"user_id": "a"}),  # unset -> lower
        ({"user_id": "a"}, {"user_id": ""}, {"user_id": ""}),  # empty -> cleared
        ({"user_id": "a"}, {"user_id": "b"}, {"user_id": "b"}),  # value -> upper
        ({}, {"user_id": "b"}, {"user_id": "b"}),
        ({"use_case_version": 1}, {}, {"use_case_version": 1}),  # int unset -> lower
        ({"use_case_version": 1}, {"use_case_version": 2}, {"use_case_version": 2}),
        ({"limit_ids": ("a",)}, {}, {"limit_ids": ("a",)}),  # list unset -> lower
        ({"limit_ids": ("a",)}, {"limit_ids": ()}, {"limit_ids": ()}),  # cleared
        (
            {"limit_ids": ("a", "b")},
            {"limit_ids": ("b", "c", "a", "d")},
            {"limit_ids": ("a", "b", "c", "d")},
        ),  # union, first-seen order
        ({"limit_ids": ()}, {"limit_ids": ("x",)}, {"limit_ids": ("x",)}),
        ({"request_properties": {"a": "1"}}, {}, {"request_properties": {"a": "1"}}),
        (
            {"request_properties": {"a": "1"}},
            {"request_properties": {}},
            {"request_properties": {}},
        ),  # cleared
        (
            {"request_properties": {"a": "1", "b": "2"}},
            {"request_properties": {"b": "3", "a": None, "c": "4"}},
            {"request_properties": {"b": "3", "c": "4"}},
        ),  # update, None removes
    ],
)
def test_kind_merge_rows(lower: Params, upper: Params, expected: Params) -> None:
    assert over(lower, upper) == expected


def test_merge_does_not_mutate_its_inputs() -> None:
    lower: Params = {"limit_ids": ("a",), "request_properties": {"k": "v"}}
    upper: Params = {"limit_ids": ("b",), "request_properties": {"k": None}}
    over(lower, upper)
    assert lower == {"limit_ids": ("a",), "request_properties": {"k": "v"}}
    assert upper == {"limit_ids": ("b",), "request_properties": {"k": None}}


# --- name-ID pairs -----------------------------------------------------------------------

LOWER: Params = {
    "use_case_name": "uc",
    "use_case_id": "id1",
    "use_case_version": 3,
    "use_case_step": "s",
    "use_case_properties": {"p": "1"},
    "user_id": "u",
}


def test_pair_upper_sets_nothing() -> None:
    assert over(LOWER, {"user_id": "v"}) == {**LOWER, "user_id": "v"}


def test_pair_name_empty_clears_whole_use_case() -> None:
    assert over(LOWER, {"use_case_name": ""}) == {"use_case_name": "", "user_id": "u"}


def test_pair_same_name_keeps_id_and_merges_members() -> None:
    result = over(LOWER, {"use_case_name": "uc", "use_case_properties": {"q": "2"}})
    assert result == {**LOWER, "use_case_properties": {"p": "1", "q": "2"}}


def test_pair_same_name_with_id_takes_upper_id() -> None:
    assert over(LOWER, {"use_case_name": "uc", "use_case_id": "id2"})["use_case_id"] == "id2"


def test_pair_different_name_is_a_new_use_case() -> None:
    result = over(LOWER, {"use_case_name": "other", "use_case_step": "t"})
    assert result["use_case_name"] == "other"
    assert is_uuid4(result["use_case_id"]) and result["use_case_id"] != "id1"
    assert result["use_case_step"] == "t"
    assert "use_case_version" not in result and "use_case_properties" not in result
    assert result["user_id"] == "u"


def test_pair_different_name_with_id() -> None:
    result = over(LOWER, {"use_case_name": "other", "use_case_id": "x"})
    assert result == {"use_case_name": "other", "use_case_id": "x", "user_id": "u"}


def test_pair_id_only_keeps_lower_name() -> None:
    result = over(LOWER, {"use_case_id": "x"})
    assert result == {**LOWER, "use_case_id": "x"}


def test_experience_pair_works_the_same_way() -> None:
    lower: Params = {"experience_name": "e", "experience_id": "e1"}
    assert over(lower, {"experience_id": "e2"}) == {"experience_name": "e", "experience_id": "e2"}
    assert over(lower, {"experience_name": ""}) == {"experience_name": ""}
    new = over(lower, {"experience_name": "f"})
    assert new["experience_name"] == "f" and is_uuid4(new["experience_id"])
    assert over(lower, {"experience_name": "e"}) == lower


def test_fresh_id_generated_once_per_level() -> None:
    level = new_level({"use_case_name": "n"})
    first = merge({}, level)
    again = fold({"use_case_name": "other"}, [level])
    assert first["use_case_id"] == again["use_case_id"] == level.fresh_ids["use_case_id"]


def test_level_with_id_generates_nothing() -> None:
    assert new_level({"use_case_name": "n", "use_case_id": "i"}).fresh_ids == {}
    assert Level({}).fresh_ids == {}


# --- through scopes ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_global")
def test_name_only_scope_gets_new_id_on_every_entry() -> None:
    ids = []
    scope = track_context(use_case_name="n")
    for _ in range(3):
        with scope:
            ids.append(get_context()["use_case_id"])
            assert get_context()["use_case_id"] == ids[-1]  # stable inside the scope
    assert len(set(ids)) == 3

    @track(use_case_name="m")
    def f() -> Any:
        return get_context()["use_case_id"]

    assert f() != f()


@pytest.mark.usefixtures("no_global")
def test_precedence_is_by_method_first() -> None:
    """A @track entered inside a track_context still ranks below it."""

    @track(user_id="track_user", limit_ids=["t"])
    def inner() -> Any:
        return dict(get_context())

    with track_context(user_id="ctx_user", limit_ids=["c"]):
        result = inner()
    assert result["user_id"] == "ctx_user"
    assert result["limit_ids"] == ["t", "c"]


@pytest.mark.usefixtures("no_global")
def test_cleared_by_a_context_is_not_resurrected_by_an_inner_track() -> None:
    @track(limit_ids=["t"])
    def inner() -> Any:
        return get_context()["limit_ids"]

    with track_context(limit_ids=[]):
        assert inner() == []


@pytest.mark.usefixtures("no_global")
def test_step_version_properties_of_a_new_use_case_start_empty() -> None:
    with track_context(
        use_case_name="a", use_case_version=2, use_case_step="s1", use_case_properties={"k": "v"}
    ):
        with track_context(use_case_name="b"):
            ctx = get_context()
            assert ctx["use_case_name"] == "b"
            for key in ("use_case_version", "use_case_step", "use_case_properties"):
                assert key not in ctx
        with track_context(use_case_name="a", use_case_properties={"j": "w"}):
            ctx = get_context()
            assert ctx["use_case_version"] == 2
            assert ctx["use_case_properties"] == {"k": "v", "j": "w"}


@pytest.mark.usefixtures("no_global")
def test_orphan_use_case_fields_are_not_emitted(otel: Any) -> None:
    from fixtures_otel import payi_attrs

    with track_context(use_case_version=4, use_case_step="lonely", experience_id="x"):
        assert get_context()["use_case_version"] == 4
    assert payi_attrs(otel.one("lonely")) == {}
