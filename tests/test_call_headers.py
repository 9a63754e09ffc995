"""The per-call level: a client's default headers and the call's own headers are ONE level above
every scope (README "GenAI calls: headers and spans"; docs/precedence.md "The per-call level").

Whatever spellings (any case, ``x-payi-*`` or Pay-i's ``xProxy-*``, ``str`` or ``bytes`` names)
and sources (``default_headers``, ``with_options``, ``copy``, ``extra_headers``, the raw and
streaming response wrappers) a request combines, exactly one header per parameter goes on the
wire, in the dialect in force, with the value the rules choose; and (the ``surface`` fixture
checks it with GenAI spans on) the GenAI span says the same.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Mapping
from typing import Any, Optional, Union

import anthropic
import openai
import pytest
from fixtures_genai import CHAT, MESSAGE, GenAI, payi_headers
from hypothesis import given
from hypothesis import strategies as st
from test_properties import FAST, GENERIC, MISSING, PARAMS, ref_fold

from payi_otel import get_context, track_context
from payi_otel._model.merge import Level, combine, fold, merge, new_level
from payi_otel._model.parameters import REGISTRY, ParameterValueError

HeaderName = Union[str, bytes]
Headers = Mapping[HeaderName, Any]

_PARAMETER = {p.name: p for p in REGISTRY}


def _title(header: str) -> str:
    return "-".join(word.capitalize() for word in header.split("-"))


#: How a caller may spell a parameter's header (names from the one registry).
SPELLINGS = {
    "lower": lambda p: p.header,
    "Title-Case": lambda p: _title(p.header),
    "UPPER": lambda p: p.header.upper(),
    "xProxy": lambda p: p.payi_header,
    "bytes": lambda p: _title(p.header).encode("ascii"),
}


def spelled(spelling: str, values: Mapping[str, str]) -> dict[HeaderName, str]:
    """``values`` (parameter -> header text) as headers in ``spelling``."""
    return {SPELLINGS[spelling](_PARAMETER[name]): text for name, text in values.items()}


# The scope every call is made in, and what the client's defaults and the call's headers give.
SCOPE: dict[str, Any] = {
    "use_case_name": "flow",
    "use_case_version": 1,
    "user_id": "scope_user",
    "limit_ids": ["scope_limit"],
    "request_properties": {"s": "1", "x": "scope"},
    "account_name": "scope_account",
}
CLIENT = {
    "user_id": "client_user",
    "use_case_version": "2",
    "limit_ids": "client_limit",
    "request_properties": '{"c": "1", "x": "client"}',
}
CALL = {
    "user_id": "call_user",
    "use_case_version": "3",
    "limit_ids": "call_limit",
    "request_properties": '{"x": "call", "k": "2", "s": null}',
}
#: Clears a list and a string; an empty version means "not given".
CLEAR = {"limit_ids": "", "account_name": "", "use_case_version": ""}

# What each request must carry, as x-payi-* headers, besides the scope's use case (name and id).
SCOPE_ONLY_WHEN_CLEARED = {
    "x-payi-use-case-version": "1",
    "x-payi-user-id": "scope_user",
    "x-payi-request-properties": {"s": "1", "x": "scope"},
}
EXPECTED = {
    # (client defaults given, call headers given) -> (first request, second request)
    (True, False): (
        {
            "x-payi-use-case-version": "2",
            "x-payi-user-id": "client_user",
            "x-payi-limit-ids": "scope_limit,client_limit",
            "x-payi-account-name": "scope_account",
            "x-payi-request-properties": {"s": "1", "x": "client", "c": "1"},
        },
        SCOPE_ONLY_WHEN_CLEARED,
    ),
    (False, True): (
        {
            "x-payi-use-case-version": "3",
            "x-payi-user-id": "call_user",
            "x-payi-limit-ids": "scope_limit,call_limit",
            "x-payi-account-name": "scope_account",
            "x-payi-request-properties": {"x": "call", "k": "2"},
        },
        SCOPE_ONLY_WHEN_CLEARED,
    ),
    (True, True): (
        # strings and the version: the call's; lists: the scope's, the client's and the
        # call's; dicts: the call's keys over the client's over the scope's
        {
            "x-payi-use-case-version": "3",
            "x-payi-user-id": "call_user",
            "x-payi-limit-ids": "scope_limit,client_limit,call_limit",
            "x-payi-account-name": "scope_account",
            "x-payi-request-properties": {"x": "call", "c": "1", "k": "2"},
        },
        # the call's "" clears the client's list too; its empty version is not given
        {
            "x-payi-use-case-version": "2",
            "x-payi-user-id": "client_user",
            "x-payi-request-properties": {"s": "1", "x": "client", "c": "1"},
        },
    ),
}

#: Where the headers come from: (client defaults given, call headers given, how it is sent).
SOURCES = {
    "default_headers": (True, False, "create"),
    "extra_headers": (False, True, "create"),
    "default_headers+extra_headers": (True, True, "create"),
    "with_options": (True, True, "create"),
    "copy(set_default_headers)": (True, True, "create"),
    "with_raw_response": (True, True, "with_raw_response"),
    "with_streaming_response": (True, True, "with_streaming_response"),
}
#: Sources whose client defaults are written in the spelling under test (the others write
#: them lower-case, the call's in the spelling under test: the client/call mismatch).
DEFAULTS_SPELLED = {"default_headers", "with_options", "copy(set_default_headers)"}


class Clients:
    """Makes SDK clients (``sdk``, sync or async) pointed at the fake server, all on one HTTP
    client (an SDK client making its own costs more than the calls this file makes)."""

    def __init__(self, surface: GenAI, sdk: str, is_async: bool) -> None:
        self.sdk = sdk
        self.is_async = is_async
        module: Any = openai if sdk == "openai" else anthropic
        self.cls: Any = getattr(
            module,
            ("AsyncOpenAI" if is_async else "OpenAI")
            if sdk == "openai"
            else ("AsyncAnthropic" if is_async else "Anthropic"),
        )
        self.http = (module.DefaultAsyncHttpxClient if is_async else module.DefaultHttpxClient)()
        self.base_url = (
            surface.server.openai_base_url if sdk == "openai" else surface.server.anthropic_base_url
        )

    def make(self, defaults: Optional[Headers] = None, **kwargs: Any) -> Any:
        if defaults is not None:
            kwargs["default_headers"] = defaults
        return self.cls(
            base_url=self.base_url, api_key="test", max_retries=0, http_client=self.http, **kwargs
        )

    async def close(self) -> None:
        await _maybe(self.http.aclose() if self.is_async else self.http.close())


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def send(
    client: Any, sdk: str, how: str = "create", extra_headers: Optional[Headers] = None
) -> None:
    """One call through ``client`` (sync or async), sent the way ``how`` says."""
    resource = client.chat.completions if sdk == "openai" else client.messages
    kwargs: dict[str, Any] = dict(CHAT if sdk == "openai" else MESSAGE)
    if extra_headers is not None:
        kwargs["extra_headers"] = extra_headers
    if how == "create":
        await _maybe(resource.create(**kwargs))
    elif how == "with_raw_response":
        await _maybe((await _maybe(resource.with_raw_response.create(**kwargs))).parse())
    else:
        streamed = resource.with_streaming_response.create(**kwargs)
        if hasattr(streamed, "__aenter__"):
            async with streamed as response:
                await response.parse()
        else:
            with streamed as response:
                response.parse()


def _client(clients: Clients, source: str, spelling: str, defaults: Mapping[str, str]) -> Any:
    """A client whose default headers end up giving ``defaults``, built the way ``source``
    says (so the SDK's own merging of default headers is part of what is tested)."""
    own = spelled(spelling if source in DEFAULTS_SPELLED else "lower", defaults)
    if source == "with_options":
        # The base gives a stale user id that with_options overrides in another case.
        user: Any = SPELLINGS[spelling](_PARAMETER["user_id"])
        override = dict(own)
        override[user.swapcase()] = override.pop(user)
        return clients.make({user: "stale_user"}).with_options(default_headers=override)
    if source == "copy(set_default_headers)":
        stale = spelled(
            "lower",
            {"user_id": "stale_user", "limit_ids": "stale_limit", "account_name": "stale_account"},
        )
        return clients.make(stale).copy(set_default_headers=own)
    return clients.make(own)


def _attribution_names(surface: GenAI) -> list[list[str]]:
    """The attribution header names (lower-cased) of each request, either spelling."""
    return [
        [k.lower() for k, _ in r.raw_headers if k.lower().startswith(("x-payi-", "xproxy-"))]
        for r in surface.server.requests
    ]


def _normal(headers: Mapping[str, str]) -> dict[str, Any]:
    return {k: json.loads(v) if k.endswith("-properties") else v for k, v in headers.items()}


#: Every source in every spelling, but bytes names in anthropic's default_headers: anthropic's
#: own SDK cannot take them (httpx2.Headers.__setitem__ calls name.encode), with or without
#: payi_otel.
def _cases(sdk: str) -> list[tuple[str, str]]:
    return [
        (source, spelling)
        for source in SOURCES
        for spelling in SPELLINGS
        if not (sdk == "anthropic" and spelling == "bytes" and source in DEFAULTS_SPELLED)
    ]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_client_defaults_and_call_headers_are_one_level_with_one_header_per_parameter(
    surface: GenAI, sdk: str, is_async: bool
) -> None:
    """The grid: each source combination in each spelling (a loop, not parameters: the
    ``surface`` fixture's set-up costs more than the calls), two requests each: one that
    combines every kind, one that clears a list and a string and gives an empty version."""
    clients = Clients(surface, sdk, is_async)
    for source, spelling in _cases(sdk):
        case = f"{source} in {spelling}"
        has_defaults, has_call, how = SOURCES[source]
        with track_context(**SCOPE):
            use_case = {
                "x-payi-use-case-name": "flow",
                "x-payi-use-case-id": get_context()["use_case_id"],
            }
            for given in ((CLIENT, CALL), (CLIENT, CLEAR) if has_call else (CLEAR, None)):
                client_values, call_values = given
                client = _client(clients, source, spelling, client_values if has_defaults else {})
                call = spelled(spelling, call_values) if has_call and call_values else None
                await send(client, sdk, how, call)
        expected = [{**use_case, **e} for e in EXPECTED[(has_defaults, has_call)]]
        assert [_normal(a) for a in surface.attribution()[-2:]] == expected, case
        # One header per parameter, in the dialect in force only (no caller spelling left).
        other = "xproxy-" if surface.dialect == "x-payi" else "x-payi-"
        for names in _attribution_names(surface)[-2:]:
            assert len(names) == len(set(names)), (case, names)
            assert not [n for n in names if n.startswith(other)], (case, names)
    await clients.close()


# --- the engine: the per-call level against the reference model --------------------------------


@FAST
@given(st.lists(PARAMS, max_size=4), PARAMS, PARAMS)
def test_client_then_call_as_one_level_equals_two_levels_for_every_parameter_but_pairs(
    stack: list[dict[str, Any]], client: dict[str, Any], call: dict[str, Any]
) -> None:
    """For every parameter outside a name-ID pair, the per-call level (the client's defaults
    and the call's headers combined, ``_merge.combine``) merged over any scopes gives what
    the reference model of docs/precedence.md gives for the client's defaults as one level
    and the call's above it: the call's string or version wins, lists add up (a clear in
    either stays a clear), dicts update (a key set to None in the call removes it from the
    client's and the scopes' alike)."""
    scopes = fold({}, [new_level(p) for p in stack])
    engine = fold(scopes, combine([(client, frozenset()), (call, frozenset())]))
    reference = ref_fold([*enumerate(stack), ("client", client), ("call", call)])
    for p in GENERIC:
        assert engine.get(p, MISSING) == reference.get(p, MISSING), p
    # One source alone is that level (with the ids it made once); a call removing a
    # parameter ("Omit()") is as if the client had not given it.
    (alone,) = combine([(call, frozenset())])
    assert merge(scopes, alone) == merge(scopes, Level(call, alone.fresh_ids))
    removed = frozenset(client) - frozenset(call)
    without = {k: v for k, v in client.items() if k not in removed}
    assert [level.params for level in combine([(client, frozenset()), (call, removed)])] == [
        level.params for level in combine([(without, frozenset()), (call, frozenset())])
    ]


# --- what the grid does not show --------------------------------------------------------------

#: Both SDKs, sync and async (a loop inside each test below: the ``surface`` modes are the
#: parameters, whose set-up costs more than the calls).
SDK_MODES = [(sdk, is_async) for sdk in ("openai", "anthropic") for is_async in (False, True)]


async def test_a_call_omit_unsets_the_client_default_while_none_and_not_given_keep_it(
    surface: GenAI,
) -> None:
    """A call's ``Omit()`` on a client default removes it for that call, as the SDKs do for
    any header (the scopes' value applies); ``None`` and ``NotGiven`` are "not given" by
    the call, so the client's default stays."""
    for sdk, is_async in SDK_MODES:
        module: Any = openai if sdk == "openai" else anthropic
        omit = module._types.Omit  # the oldest openai supported has no top-level Omit
        clients = Clients(surface, sdk, is_async)
        client = clients.make({"x-payi-user-id": "client_user", "xProxy-Limit-IDs": "client_limit"})
        with track_context(use_case_name="", user_id="scope_user", limit_ids=["scope_limit"]):
            await send(
                client,
                sdk,
                extra_headers={"X-Payi-User-Id": omit(), "x-payi-limit-ids": omit()},
            )
            await send(
                client,
                sdk,
                extra_headers={"x-payi-user-id": None, "X-PAYI-LIMIT-IDS": module.NOT_GIVEN},
            )
        await clients.close()
        assert surface.attribution()[-2:] == [
            {"x-payi-user-id": "scope_user", "x-payi-limit-ids": "scope_limit"},
            {"x-payi-user-id": "client_user", "x-payi-limit-ids": "scope_limit,client_limit"},
        ], (sdk, is_async)


async def test_a_list_or_dict_the_client_clears_stays_cleared_below_a_call_that_adds_to_it(
    surface: GenAI,
) -> None:
    """Client ``limit_ids: ""`` (no limits for this client's calls) and a call adding one:
    that one only - the scopes' limits do not come back. Likewise a cleared properties dict."""
    for sdk, is_async in SDK_MODES:
        clients = Clients(surface, sdk, is_async)
        client = clients.make({"X-Payi-Limit-Ids": "", "x-payi-request-properties": ""})
        with track_context(
            use_case_name="", limit_ids=["scope_limit"], request_properties={"s": "1"}
        ):
            await send(
                client,
                sdk,
                extra_headers={
                    "xProxy-Limit-IDs": "call_limit",
                    "X-PAYI-REQUEST-PROPERTIES": '{"k": "v"}',
                },
            )
            await send(client, sdk)
        await clients.close()
        assert [_normal(a) for a in surface.attribution()[-2:]] == [
            {"x-payi-limit-ids": "call_limit", "x-payi-request-properties": {"k": "v"}},
            {},
        ], (sdk, is_async)


async def test_a_use_case_in_client_defaults_and_call_headers_moves_as_one_pair(
    surface: GenAI,
) -> None:
    """Within the per-call level a use case is a (name, id) pair, as between scopes: the
    call naming the use case in force keeps its id (never the id the client gave another
    one); a name the level leaves without an id gets a fresh one per call."""
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({"x-payi-use-case-name": "flow"}, {"X-Payi-Use-Case-Step": "s"}),
        (
            {"x-payi-use-case-name": "other", "x-payi-use-case-id": "other_id"},
            {"xProxy-UseCase-Name": "flow"},
        ),
        (
            {"x-payi-use-case-id": "client_id", "x-payi-use-case-version": "7"},
            {"X-PAYI-USE-CASE-NAME": "other"},
        ),
        (
            {"xProxy-UseCase-Name": "other", "xProxy-UseCase-ID": "other_id"},
            {"x-payi-use-case-id": "call_id"},
        ),
        ({"x-payi-use-case-name": "other"}, {"x-payi-use-case-step": "s"}),
        ({"x-payi-use-case-name": "other"}, {"x-payi-use-case-step": "s"}),
    ]
    for sdk, is_async in SDK_MODES:
        clients = Clients(surface, sdk, is_async)
        with track_context(use_case_name="flow", use_case_version=1):
            flow_id = get_context()["use_case_id"]
            for defaults, call in cases:
                await send(clients.make(defaults), sdk, extra_headers=call)
        await clients.close()
        sent = surface.attribution()[-len(cases) :]
        same_flow, flow_again, new_other, other_call_id, fresh1, fresh2 = sent
        assert same_flow == {
            "x-payi-use-case-name": "flow",
            "x-payi-use-case-id": flow_id,
            "x-payi-use-case-version": "1",
            "x-payi-use-case-step": "s",
        }
        assert flow_again == {
            "x-payi-use-case-name": "flow",
            "x-payi-use-case-id": flow_id,
            "x-payi-use-case-version": "1",
        }
        # A new use case: the client's id and version were for the one in force, not it.
        assert new_other["x-payi-use-case-name"] == "other"
        assert uuid.UUID(new_other["x-payi-use-case-id"]).version == 4
        assert "x-payi-use-case-version" not in new_other
        assert other_call_id == {"x-payi-use-case-name": "other", "x-payi-use-case-id": "call_id"}
        assert fresh1["x-payi-use-case-id"] != fresh2["x-payi-use-case-id"]  # once per call
        assert {uuid.UUID(f["x-payi-use-case-id"]).version for f in (fresh1, fresh2)} == {4}


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_client_defaults_in_both_spellings_with_different_values_raise_naming_both(
    genai: GenAI, sdk: str
) -> None:
    """The client's defaults are one source, as the call's headers are: one parameter under
    both spellings with different values is a ValueError naming both headers, nothing sent -
    ``with_options(default_headers=...)`` included, since the SDK merges it into the same
    defaults (same values, or another case of the same spelling, are fine)."""
    genai.check_invariant = False  # nothing is sent for the calls that raise
    make = genai.openai_client if sdk == "openai" else genai.anthropic_client
    clients = [
        make(default_headers={"x-payi-user-id": "a", "xProxy-User-ID": "b"}),
        make(default_headers={"x-payi-user-id": "a"}).with_options(
            default_headers={"XPROXY-USER-ID": "b"}
        ),
    ]
    for client in clients:
        with pytest.raises(ParameterValueError) as raised:
            asyncio_free_send(client, sdk)
        message = str(raised.value).lower()
        assert "'x-payi-user-id'" in message and "'xproxy-user-id'" in message
    assert genai.server.requests == []
    asyncio_free_send(make(default_headers={"x-payi-user-id": "a", "xProxy-User-ID": "a"}), sdk)
    asyncio_free_send(
        make(default_headers={"x-payi-user-id": "a"}).with_options(
            default_headers={"X-PAYI-USER-ID": "b"}
        ),
        sdk,
    )
    assert [payi_headers(r) for r in genai.server.requests] == [
        {"x-payi-user-id": "a"},
        {"x-payi-user-id": "b"},
    ]


def asyncio_free_send(client: Any, sdk: str) -> None:
    if sdk == "openai":
        client.chat.completions.create(**CHAT)
    else:
        client.messages.create(**MESSAGE)


async def test_azure_openai_default_headers_and_call_headers_are_one_level(
    surface: GenAI,
) -> None:
    """``AzureOpenAI`` (its ``api-key`` added to the call's headers by the SDK) takes the
    same path: the client's default and the call's header, in other spellings, give one
    value per parameter."""
    surface.server.azure_deployments["gpt-4"] = "gpt-4-0613"  # CHAT's model, as a deployment
    for cls in (openai.AzureOpenAI, openai.AsyncAzureOpenAI):
        client = cls(
            azure_endpoint=surface.server.base_url,
            api_key="azure-key",
            api_version="2024-06-01",
            max_retries=0,
            default_headers={"x-payi-user-id": "client_user", "x-payi-limit-ids": "client_limit"},
        )
        with track_context(use_case_name="", limit_ids=["scope_limit"]):
            await _maybe(
                client.chat.completions.create(
                    **CHAT,
                    extra_headers={"X-Payi-User-Id": "call_user", "xProxy-Limit-IDs": "call_limit"},
                )
            )
        request = surface.server.requests[-1]
        assert request.path.startswith("/openai/deployments/")
        assert request.headers["api-key"] == "azure-key"
        assert surface.attribution()[-1] == {
            "x-payi-user-id": "call_user",
            "x-payi-limit-ids": "scope_limit,client_limit,call_limit",
        }, cls
        names = _attribution_names(surface)[-1]
        assert len(names) == len(set(names)) == 2, names
