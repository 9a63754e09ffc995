"""The recipe "add a wire dialect" (docs/architecture.md), done once: a toy dialect is one
``Dialect`` (header names made from the parameter registry, a prefix, an encoding) plus one
``register`` line, and then the whole house speaks it, end to end, with the real OpenTelemetry
SDK and the real ``openai`` / ``anthropic`` SDKs against the local fake server:

* ``payi_instrument(header_dialect=...)`` (or ``PAYI_HEADER_DIALECT``) selects it, and every
  call carries the resolved attribution in its names, exactly what the GenAI span says;
* a caller's headers in its names are recognised (read into the per-call level, whichever
  dialect is in force, as the built-in ones are) and replaced by the resolved set;
* a redirect to another origin the policy refuses loses every header under its prefix;
* unregistering it restores the world.

Every expectation is derived from the registry and the engine (the x-payi path, the GenAI
span's attributes), never from a second table of names or values.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

import httpx
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest
from fixtures_genai import CHAT, MESSAGE, GenAI, first_attempts, headers_from_span

from payi_otel import ParameterValueError, PayiInstrumentor, payi_instrument, track_context
from payi_otel._model.dialects import (
    PAYI_PROXY,
    X_PAYI,
    Dialect,
    dialect_names,
    is_attribution_header,
    is_dialect_header,
    register,
    registered,
    unregister,
)
from payi_otel._model.parameters import REGISTRY, Kind, Parameter
from payi_otel._settings import policy_from

_PARAMETER = {p.name: p for p in REGISTRY}


def _toy_name(parameter: Parameter) -> Optional[str]:
    """The toy's header for a parameter: ``X-Toy-`` and the parameter's name; it has no name
    for the lists (so, like ``payi-proxy``, it does not send every parameter)."""
    if parameter.kind is Kind.LIST:
        return None
    return "X-Toy-" + "-".join(word.capitalize() for word in parameter.name.split("_"))


#: The whole dialect: one object. (``register(TOY)`` is the other line.)
TOY = Dialect.over_registry("toy", _toy_name, prefix="x-toy-", claims_prefix=True)

# The scope every call runs in (values that must be percent-encoded and a dict included).
SCOPE: dict[str, Any] = {
    "use_case_name": "flow",
    "use_case_step": "answer ✓",
    "user_id": "scope_user",
    "limit_ids": ["monthly"],
    "account_name": "acme",
    "request_properties": {"tier": "gold", "note": "naïve"},
}
# A call's own values (parameter -> header text), and a client's defaults.
CALL = {"user_id": "call_user", "request_properties": '{"note": "call"}'}
DEFAULTS = {"account_name": "client_account", "use_case_step": "draft"}


@pytest.fixture
def toy() -> Iterator[Dialect]:
    """The toy dialect registered for one test (requested before ``genai``: it is
    unregistered after payi_otel is uninstrumented)."""
    register(TOY)
    yield TOY
    unregister(TOY.name)


def select(genai: GenAI, dialect: str, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """payi_otel again, with ``dialect`` chosen by argument or by ``PAYI_HEADER_DIALECT``."""
    genai.check_invariant = False  # the fixture's check knows the two built-in dialects only
    PayiInstrumentor().uninstrument()
    if how == "argument":
        payi_instrument(tracer_provider=genai.otel.provider, header_dialect=dialect)
    else:
        monkeypatch.setenv("PAYI_HEADER_DIALECT", dialect)
        payi_instrument(tracer_provider=genai.otel.provider)


def spelled(dialect: Dialect, values: Mapping[str, str], case: Callable[[str], str]) -> dict:
    """``values`` (parameter -> text) as headers in ``dialect``'s names, in some case."""
    return {case(dialect.headers[name]): text for name, text in values.items()}


def in_x_payi(headers: Mapping[str, str], dialect: Dialect) -> dict[str, str]:
    """What a request carried in ``dialect``, renamed to the registry's x-payi-* names."""
    by_header = {header.lower(): name for name, header in dialect.headers.items()}
    return {
        _PARAMETER[by_header[key.lower()]].header: value
        for key, value in headers.items()
        if key.lower() in by_header
    }


def _normal(headers: Mapping[str, str]) -> frozenset[tuple[str, Any]]:
    dicts = {p.header for p in REGISTRY if p.kind is Kind.DICT}
    return frozenset(
        (k, tuple(sorted(json.loads(v).items())) if k in dicts else v) for k, v in headers.items()
    )


def family(request: RecordedRequest) -> dict[str, str]:
    """Every header under a built-in or the toy dialect's prefix a request carried."""
    prefixes = (X_PAYI.prefix, PAYI_PROXY.prefix, TOY.prefix)
    return {k: v for k, v in request.headers.items() if k.startswith(prefixes)}


def assert_the_wire_is_the_spans(genai: GenAI, dialect: Dialect) -> None:
    """Every call carried, in ``dialect``'s names and nothing else of the family, exactly
    what its GenAI span says (for the parameters the dialect has a name for)."""
    requests = first_attempts(genai.server)
    spans = genai.otel.genai_spans()
    assert requests and len(spans) == len(requests)
    carried = {_PARAMETER[name].header for name in dialect.headers}
    for request in requests:
        wire = family(request)
        assert set(wire) <= {h.lower() for h in dialect.fields}, wire
    from_spans = Counter(
        _normal({k: v for k, v in headers_from_span(s).items() if k in carried}) for s in spans
    )
    from_wire = Counter(_normal(in_x_payi(family(r), dialect)) for r in requests)
    assert from_spans == from_wire


# --- selected, it is what every call carries --------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "PAYI_HEADER_DIALECT"])
async def test_selected_the_toy_dialect_is_what_every_call_carries(
    toy: Dialect, genai: GenAI, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    select(genai, toy.name, how, monkeypatch)
    with track_context(**SCOPE):
        genai.openai.chat.completions.create(**CHAT)
        await genai.async_openai.chat.completions.create(**CHAT)
        genai.anthropic.messages.create(**MESSAGE)
    assert_the_wire_is_the_spans(genai, toy)
    # The scope's values are on the wire, in the toy's names; a list has no toy name.
    for request in first_attempts(genai.server):
        sent = in_x_payi(family(request), toy)
        assert sent[_PARAMETER["user_id"].header] == "scope_user"
        assert len(family(request)) == len(sent)
    assert "limit_ids" not in toy.headers


def test_a_dialect_is_named_in_the_policy_only_while_registered(toy: Dialect) -> None:
    assert policy_from(toy.name, None, {}).dialect is toy
    assert policy_from(None, None, {"PAYI_HEADER_DIALECT": " TOY "}).dialect is toy
    unregister(toy.name)
    with pytest.raises(ParameterValueError) as raised:
        policy_from(toy.name, None, {})
    assert str(raised.value) == (
        f"header_dialect must be one of {', '.join(dialect_names())}, got {toy.name!r}"
    )
    assert toy.name not in dialect_names()
    register(toy)  # for the fixture's teardown


# --- a caller's headers in its names ------------------------------------------------------------


@pytest.mark.parametrize("in_force", ["toy", "x-payi"])
def test_a_callers_headers_in_the_toy_names_are_read_and_replaced(
    toy: Dialect, genai: GenAI, monkeypatch: pytest.MonkeyPatch, in_force: str
) -> None:
    """The same client defaults and call headers, spelled in x-payi names and in the toy's
    (any case), give the same wire: the per-call level reads every registered dialect,
    whichever is in force, and the call carries the resolved set only, in the one in force."""
    select(genai, in_force, "argument", monkeypatch)
    dialect = toy if in_force == "toy" else X_PAYI
    # x-payi spelling first: the reference, through the built-in path.
    spellings = [(X_PAYI, str.lower, str.title), (toy, str.upper, str.lower), (toy, str, str)]
    with track_context(**SCOPE):
        for named, default_case, call_case in spellings:
            client = genai.openai_client(default_headers=spelled(named, DEFAULTS, default_case))
            client.chat.completions.create(**CHAT, extra_headers=spelled(named, CALL, call_case))
    requests = first_attempts(genai.server)
    assert len(requests) == len(spellings)
    wires = [in_x_payi(family(r), dialect) for r in requests]
    assert all(_normal(wire) == _normal(wires[0]) for wire in wires), wires
    for request in requests:  # one header per parameter, only in the dialect in force
        names = [k.lower() for k, _ in request.raw_headers if k.lower() in family(request)]
        assert len(names) == len(set(names))
        assert set(family(request)) <= {h.lower() for h in dialect.fields}
    assert_the_wire_is_the_spans(genai, dialect)
    assert wires[0][_PARAMETER["user_id"].header] == "call_user"  # the call's value won


def test_a_misspelt_toy_header_is_an_error_and_nothing_is_sent(
    toy: Dialect, genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The toy claims its prefix (as x-payi does): an unknown name under it is a typo."""
    select(genai, toy.name, "argument", monkeypatch)
    meant = toy.headers["use_case_name"]
    with track_context(user_id="u"), pytest.raises(ParameterValueError) as raised:
        genai.openai.chat.completions.create(**CHAT, extra_headers={meant + "x": "support"})
    assert f"did you mean {meant.lower()!r}" in str(raised.value)
    assert genai.server.requests == []


def test_one_parameter_in_two_dialects_with_two_values_is_an_error(
    toy: Dialect, genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    select(genai, toy.name, "argument", monkeypatch)
    ours, theirs = X_PAYI.headers["user_id"], toy.headers["user_id"]
    with pytest.raises(ParameterValueError) as raised:
        genai.openai.chat.completions.create(**CHAT, extra_headers={ours: "a", theirs: "b"})
    assert ours in str(raised.value) and theirs in str(raised.value)
    assert genai.server.requests == []


# --- redirects ----------------------------------------------------------------------------------


def test_a_redirect_to_a_refused_origin_loses_every_toy_header(
    toy: Dialect, genai: GenAI, llm_server: FakeLLMServer
) -> None:
    """An SDK call (the request hook's headers) and a plain httpx request (the caller's own,
    one of them no parameter's but under the prefix) redirected to a host the policy
    refuses: the hop carries none of the toy's headers."""
    genai.check_invariant = False
    PayiInstrumentor().uninstrument()
    payi_instrument(
        tracer_provider=genai.otel.provider, header_dialect=toy.name, header_hosts=["127.0.0.1"]
    )
    port = int(llm_server.base_url.rsplit(":", 1)[1])
    own = {**spelled(toy, {"user_id": "alice"}, str), toy.prefix + "trace": "t1"}
    with track_context(user_id="alice"):
        llm_server.redirect_next(1, 307, f"http://localhost:{port}")
        genai.openai.chat.completions.create(**CHAT)
        llm_server.redirect_next(1, 307, f"http://localhost:{port}")
        with httpx.Client(follow_redirects=True) as plain:
            plain.post(f"{llm_server.openai_base_url}/chat/completions", json=CHAT, headers=own)
    sdk_first, sdk_hop, plain_first, plain_hop = llm_server.requests
    assert in_x_payi(family(sdk_first), toy)[_PARAMETER["user_id"].header] == "alice"
    assert family(plain_first) == {k.lower(): v for k, v in own.items()}
    assert family(sdk_hop) == {} and family(plain_hop) == {}
    assert sdk_hop.headers["host"].startswith("localhost")


# --- unregistered, the world is as before ---------------------------------------------------------


def test_unregistering_restores_the_world(
    genai: GenAI, llm_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (dialect_names(), registered().fields)
    name, header = TOY.name, TOY.headers["user_id"]
    register(TOY)
    assert is_attribution_header(header) and is_dialect_header(TOY.prefix + "other")
    assert dialect_names() == (*before[0], name)
    unregister(name)
    assert (dialect_names(), registered().fields) == before
    assert not is_attribution_header(header) and not is_dialect_header(TOY.prefix + "other")
    # Not selectable, and its headers are nobody's: a call passes them through as written.
    PayiInstrumentor().uninstrument()
    with pytest.raises(ParameterValueError, match="header_dialect must be one of"):
        payi_instrument(tracer_provider=genai.otel.provider, header_dialect=name)
    genai.reinstrument()
    with track_context(user_id="scope_user"):
        genai.openai.chat.completions.create(**CHAT, extra_headers={header: "as_written"})
    (request,) = llm_server.requests
    assert request.headers[header.lower()] == "as_written"
    assert request.headers[X_PAYI.headers["user_id"]] == "scope_user"
