"""Issue 20: a planned call is the whole path's call (``_providers/_core._planned``).

The request hook's shortcut for the common stainless call (no header of the call's own, no
attribution header among the client's defaults, not a stream, the SDK's own ``_prepare_url``,
no model mapping, a context that can be sent as it is) remembers what ``read()`` and
``service_of()`` gave per plan key (client class, base URL object, relative URL, model).
Whatever it remembers, a planned call must send exactly the headers, put exactly the span
attributes and report exactly the ``CallRecord`` that the whole path would.

Each test here plays one scenario twice through the real SDKs (openai, anthropic; sync and
async clients) against the local fake server: once as shipped, once with the shortcut off
(``StainlessProvider.plan_key`` answering None: every call takes the whole path). It compares,
call by call:

* what the server received: host, path, body text and every ``x-payi-*`` / ``xProxy-*``
  header (names case-insensitively, duplicates kept);
* what the client's transport saw, inside the send: the absolute URL, whether the wire policy
  in force then (``WirePolicy.sends_to``) let attribution headers go there, the ``payi.*``
  baggage in the context, the ``payi.*`` attributes of the current span as they were then and
  of a GenAI span started there (as an SDK's own call span would be);
* the finished spans' ``payi*`` / ``gen_ai.*`` / standard attributes;
* every ``CallRecord`` the response observers got: provider, parameters, their headers in both
  dialects, models, usage, service, stream, error, the request as read, the options the SDK
  was handed (headers, URL, body), the span's attributes when reported and at the end.

Every run also checks, in either mode: no attribution header where the policy says none, one
header per name, no ``payi.*`` baggage to the provider, and each call tagged ``as:<user>`` in
its text went out with (and was recorded and spanned with) that user - a plan is shared by
calls of different scopes, threads and tasks. And each call asserts which path it took (a spy
on ``_core._planned``): the planned run plans exactly the calls expected to be planned, the
other run plans none - so no comparison passes vacuously.

anthropic's resource methods (``messages.create`` and the rest, anthropic 2.x) always pass
headers of their own (``Omit`` placeholders, no attribution header): they are planned, and so
are calls through the client's own ``post`` (the ``anthropic.post`` kinds), which pass none.
The review that wrote this file found one difference, since fixed: a client class whose
``_prepare_url`` was replaced after its first call stayed planned with its old URL
(``prepare_url_replaced_later``).
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import json
import re
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, Union

import anthropic
import httpx2
import openai
import pytest
from fixtures_genai import GenAI
from fixtures_server import to_local
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from payi_otel import _settings, track_context
from payi_otel._model.dialects import PAYI_PROXY, X_PAYI
from payi_otel._model.model_mappings import parse_mappings
from payi_otel._model.wire_policy import WirePolicy
from payi_otel._providers import CallRecord, _core, _stainless
from payi_otel._providers._stainless import StainlessProvider

GATEWAY = "llm-gateway.corp.example"
OTHER = "gateway-2.corp.example"
USER_HEADERS = ("x-payi-user-id", "xproxy-user-id")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TAG = re.compile(r"\bas:(\S+)")


@dataclass(frozen=True)
class Sdk:
    """What a scenario needs to know of one SDK."""

    name: str
    #: Two models its endpoint answers for.
    models: Tuple[str, str]
    #: Its provider's public API host (no attribution headers by default).
    public: str
    #: A host whose service is another than the SDK's own (``Provider.service_of``).
    service_host: str
    #: The path the SDK appends its endpoints to.
    base_path: str

    def url(self, host: str) -> str:
        return f"https://{host}{self.base_path}"


SDKS = {
    "openai": Sdk(
        "openai", ("gpt-4o-mini", "gpt-4o"), "api.openai.com", "res.openai.azure.com", "/v1"
    ),
    "anthropic": Sdk(
        "anthropic",
        ("claude-haiku-4-5", "claude-sonnet-4-6"),
        "api.anthropic.com",
        "bedrock-mantle.us-east-1.api.aws",
        "",
    ),
}


def _is_attribution(name: str) -> bool:
    return name.lower().startswith(("x-payi-", "xproxy-"))


def _attribution(raw: Any) -> Tuple[Tuple[str, str], ...]:
    """The attribution headers among ``raw`` (name, value) pairs: names lower-cased, sorted,
    duplicates kept."""
    found = []
    for name, value in raw:
        name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if _is_attribution(name):
            found.append((name.lower(), value))
    return tuple(sorted(found))


def _text(body: Any) -> str:
    """The caller's text in a request body (the last message, an input or a prompt)."""
    if not isinstance(body, Mapping):
        return ""
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        content = messages[-1].get("content")
        return content if isinstance(content, str) else json.dumps(content)
    for key in ("input", "prompt"):
        if isinstance(body.get(key), str):
            return str(body[key])
    return ""


def _user_tag(text: str) -> Optional[str]:
    found = _TAG.search(text)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Sent:
    """One request as the client's transport sent it."""

    url: str
    #: Whether the wire policy in force when it was sent lets attribution headers go there.
    sends: bool
    attribution: Tuple[Tuple[str, str], ...]
    text: str
    #: The payi.* baggage in the context it was sent in (the provider must get none).
    baggage: Tuple[str, ...]
    #: The payi.* attributes of a GenAI span started inside the send (as an SDK's own).
    inside: Dict[str, Any]
    #: The payi.* attributes of the span current in the send, as they were then.
    current: Dict[str, Any]


class PlanSpy:
    """Wraps ``_core._planned``: per call, whether it gave a plan; the plan dicts it saw."""

    def __init__(self) -> None:
        self.log: List[bool] = []
        self.plans: List[Dict[Any, Any]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = _core._planned

        def spy(provider: Any, instance: Any, args: Any, kwargs: Any, plans: Any) -> Any:
            result = real(provider, instance, args, kwargs, plans)
            self.log.append(result is not _core._WHOLE_PATH)
            if all(seen is not plans for seen in self.plans):
                self.plans.append(plans)
            return result

        monkeypatch.setattr(_core, "_planned", spy)


def _no_plan(self: Any, instance: Any, args: Any, kwargs: Any) -> None:
    return None


#: Which path a call is expected to take (a list: the calls its sending makes, in order;
#: None: not checked per call).
Expect = Union[bool, List[bool], None]
#: anthropic's Messages endpoint, for its calls through the client's own ``post``.
_POST_MESSAGE = "/v1/messages"


class Env:
    """One run of a scenario: its clients (through a recording transport to the local server),
    the calls' expected paths, the observer's records."""

    def __init__(
        self,
        genai: GenAI,
        sdk: Sdk,
        is_async: bool,
        planned: bool,
        monkeypatch: pytest.MonkeyPatch,
        style: str = "create",
    ) -> None:
        self.genai = genai
        self.server = genai.server
        self.sdk = sdk
        self.style = style
        self.is_async = is_async
        self.planned = planned
        self.mp = monkeypatch
        self.spy = PlanSpy()
        self.sent: List[Sent] = []
        #: What the observer got: each record, with its span's attributes as they were then.
        self.reports: List[Tuple[CallRecord, Dict[str, Any]]] = []
        self.http: List[Any] = []
        #: False: the calls run concurrently (outcomes compared as multisets).
        self.ordered = True
        #: Whether the run put other settings in force.
        self.changed = False
        self._remove: Callable[[], None] = lambda: None

    # -- setup ----------------------------------------------------------------------------

    @property
    def records(self) -> List[CallRecord]:
        return [record for record, _ in self.reports]

    def _report(self, record: CallRecord) -> None:
        self.reports.append((record, _span_attributes(record.span)))

    def observe(self) -> None:
        self._remove = _settings.add_observer(self._report)

    def reinstrument(self, **options: Any) -> None:
        """payi_otel instrumented again (new settings, new wrappers: new plan dicts)."""
        options.setdefault("caller_file", "<test>")
        self.changed = True
        self.genai.reinstrument(**options)
        self.observe()

    def install(self, **changes: Any) -> None:
        """New settings in force under the same wrappers (their plans stay)."""
        self.changed = True
        _settings.install(replace(_settings.current, **changes))

    def transport(self, is_async: bool, during: Optional[Callable[[], None]] = None) -> Any:
        """To the local server (the URL's host kept as Host), noting each request first."""
        inner = to_local(self.server, httpx2, is_async)
        tracer = self.genai.otel.provider.get_tracer("test.inside")

        def note(request: Any) -> None:
            url = str(request.url)
            try:
                body = json.loads(request.content) if request.content else None
            except ValueError:
                body = None
            current = _payi_of(trace.get_current_span())
            with tracer.start_as_current_span(
                "inside", attributes={"gen_ai.operation.name": "chat"}
            ) as span:
                inside = _payi_of(span)
            self.sent.append(
                Sent(
                    url,
                    _settings.current.wire.sends_to(url),
                    _attribution(request.headers.raw),
                    _text(body),
                    tuple(sorted(k for k in baggage.get_all() if k.startswith("payi."))),
                    inside,
                    current,
                )
            )

        if is_async:

            class AsyncRecording(httpx2.AsyncBaseTransport):  # type: ignore[misc]
                async def handle_async_request(self, request: Any) -> Any:
                    note(request)
                    return await inner.handle_async_request(request)

            return AsyncRecording()

        class Recording(httpx2.BaseTransport):  # type: ignore[misc]
            def handle_request(self, request: Any) -> Any:
                note(request)
                if during is not None:
                    during()
                return inner.handle_request(request)

        return Recording()

    def http_client(self, is_async: Optional[bool] = None, **kwargs: Any) -> Any:
        is_async = self.is_async if is_async is None else is_async
        transport = self.transport(is_async, **kwargs)
        made = (
            httpx2.AsyncClient(transport=transport)
            if is_async
            else httpx2.Client(transport=transport)
        )
        self.http.append(made)
        return made

    def client(
        self,
        base_url: Optional[str] = None,
        *,
        is_async: Optional[bool] = None,
        during: Optional[Callable[[], None]] = None,
        subclass: Optional[Callable[[type], type]] = None,
        **kwargs: Any,
    ) -> Any:
        """A client of the run's SDK (sync or async as the run, unless ``is_async``; of
        ``subclass(its class)`` when given)."""
        is_async = self.is_async if is_async is None else is_async
        kwargs.setdefault("max_retries", 0)
        http = self.http_client(is_async, during=during)
        if self.sdk.name == "openai":
            cls: Any = openai.AsyncOpenAI if is_async else openai.OpenAI
            base_url = base_url or self.server.openai_base_url
        else:
            cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
            base_url = base_url or self.server.anthropic_base_url
        if subclass is not None:
            cls = subclass(cls)
        return cls(base_url=base_url, api_key="test", http_client=http, **kwargs)

    async def close(self) -> None:
        for made in self.http:
            if isinstance(made, httpx2.AsyncClient):
                await made.aclose()
            else:
                made.close()

    # -- calls ----------------------------------------------------------------------------

    @property
    def resource_planned(self) -> Optional[bool]:
        """Whether a call through the SDK's resources (``messages.create``, ...) that the
        rules let plan is planned: it is, for both SDKs (anthropic's pass headers of their
        own, ``anthropic-workspace-id`` / ``anthropic-user-profile-id`` as ``Omit``, none of
        them an attribution header)."""
        return True

    @property
    def plain_planned(self) -> Optional[bool]:
        """What :meth:`call` expects of a plain call (``planned=True``)."""
        return True if self.style == "post" else self.resource_planned

    def _expect(self, before: int, expect: Expect) -> None:
        if expect is None:
            return
        wanted: List[Optional[bool]] = list(expect) if isinstance(expect, list) else [expect]
        if not self.planned:
            wanted = [False] * len(wanted)  # the shortcut off: never a plan
        got = self.spy.log[before:]
        assert len(got) == len(wanted), ("calls through the hook", got, wanted)
        for took, want in zip(got, wanted):
            assert want is None or took == want, ("planned?", got, wanted)

    async def do(self, send: Callable[[], Any], planned: Expect = True) -> Any:
        """``send()`` (awaited when it gives an awaitable); it took the ``planned`` path."""
        before = len(self.spy.log)
        try:
            result = send()
            if inspect.isawaitable(result):
                result = await result
        finally:
            self._expect(before, planned)
        return result

    async def call(
        self,
        client: Any,
        text: str,
        *,
        planned: Expect = True,
        model: Optional[str] = None,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One chat call (openai ``chat.completions``, anthropic ``messages``) with ``text``:
        a stream read to its end, a raw response parsed. In the ``post`` style, anthropic's
        plain calls go through the client's own ``post`` (its documented way to any
        endpoint), which sends no header of its own."""
        if self.sdk.name == "openai":
            resource = client.chat.completions
            body: Dict[str, Any] = {"model": model or self.sdk.models[0]}
        else:
            resource = client.messages
            body = {"model": model or self.sdk.models[0], "max_tokens": 64}
        body["messages"] = [{"role": "user", "content": text}]
        if self.style == "post" and not raw and not kwargs.get("stream"):
            own = kwargs.pop("extra_headers", None)
            options = {} if own is None else {"headers": own}

            def send() -> Any:
                return client.post(
                    _POST_MESSAGE,
                    cast_to=anthropic.types.Message,
                    body=body,
                    options=options,
                    **kwargs,
                )

        else:
            create = resource.with_raw_response.create if raw else resource.create

            def send() -> Any:
                return create(**body, **kwargs)

            if planned is True:
                planned = self.resource_planned
        result = await self.do(send, planned)
        if raw:
            result = result.parse()
            if inspect.isawaitable(result):
                result = await result
        if kwargs.get("stream"):
            if hasattr(result, "__aiter__"):
                async for _ in result:
                    pass
            else:
                for _ in result:
                    pass
        return result

    def expect_total(self, calls: int) -> None:
        """Every one of ``calls`` calls took the shortcut (none with it off)."""
        assert len(self.spy.log) == calls
        if self.planned and self.resource_planned is None and self.style != "post":
            return  # not checked (resource_planned)
        assert self.spy.log == [self.planned] * calls

    # -- what happened --------------------------------------------------------------------

    def check(self) -> None:
        """What must hold in either mode."""
        assert self.sent, "no request was sent"
        for sent in self.sent:
            assert sent.baggage == (), ("payi.* baggage sent to the provider", sent)
            names = [name for name, _ in sent.attribution]
            assert len(names) == len(set(names)), ("a header twice", sent)
            if not sent.sends:
                assert sent.attribution == (), ("headers where the policy says none", sent)
            user = _user_tag(sent.text)
            if user is not None:
                assert sent.inside.get("payi.user_id") == user, ("the send's context", sent)
            if user is not None and sent.sends:
                users = [v for k, v in sent.attribution if k in USER_HEADERS]
                assert users == [user], ("sent from another scope's user", sent)
        received = [_attribution(r.raw_headers) for r in self.server.requests]
        assert sorted(received) == sorted(s.attribution for s in self.sent)
        for record in self.records:
            user = _user_tag(_text(_body_of(record)))
            if user is not None:
                assert record.call.params.get("user_id") == user, ("recorded user", record)

    def outcome(self) -> Outcome:
        ids = _Ids()
        requests = [
            (r.method, r.headers.get("host"), r.path, _text(r.body), _attribution(r.raw_headers))
            for r in self.server.requests
        ]
        sent = [(s.url, s.sends, s.baggage, _plain(s.inside), _plain(s.current)) for s in self.sent]
        spans = [
            (
                s.name,
                s.instrumentation_scope.name if s.instrumentation_scope else None,
                _span_attributes(s),
            )
            for s in self.genai.otel.spans()
        ]
        records = [{**_summary(r), "span then": attrs} for r, attrs in self.reports]
        parts = [ids.norm(part) for part in (requests, sent, spans, records)]
        if not self.ordered:
            parts = [sorted(part, key=repr) for part in parts]
        return Outcome(*parts)


@dataclass
class Outcome:
    requests: List[Any]
    sent: List[Any]
    spans: List[Any]
    records: List[Any]


class _Ids:
    """Generated ids (a scope's use case id) as ``<id1>``, ``<id2>``... in order of first
    appearance: the two runs make different ones, used the same way."""

    def __init__(self) -> None:
        self.seen: Dict[str, str] = {}

    def _one(self, match: re.Match[str]) -> str:
        return self.seen.setdefault(match.group(0), f"<id{len(self.seen) + 1}>")

    def norm(self, value: Any) -> Any:
        if isinstance(value, str):
            return _UUID.sub(self._one, value)
        if isinstance(value, Mapping):
            return {self.norm(k): self.norm(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.norm(v) for v in value)
        return value


def _plain(value: Any) -> Any:
    """``value`` as comparable plain data (the SDKs' Omit / NotGiven markers by name)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    return f"<{type(value).__name__}>"


_SPAN_KEYS = ("payi", "user.id", "session.id", "gen_ai.")
#: Attributes that differ from run to run whatever the hook does.
_UNSTABLE = ("gen_ai.response.id", "gen_ai.response.time_to_first_chunk")


def _span_attributes(span: Any) -> Dict[str, Any]:
    attributes = getattr(span, "attributes", None) or {}
    return {
        k: _plain(v)
        for k, v in sorted(attributes.items())
        if k.startswith(_SPAN_KEYS) and k not in _UNSTABLE
    }


def _payi_of(span: Any) -> Dict[str, Any]:
    """A span's payi.* attributes (none on a span that records nothing)."""
    attributes = getattr(span, "attributes", None) or {}
    return {k: _plain(v) for k, v in attributes.items() if k.startswith("payi.")}


def _options_of(record: CallRecord) -> Any:
    args, kwargs = record.arguments or ((), {})
    return args[1] if len(args) > 1 else kwargs.get("options")


def _body_of(record: CallRecord) -> Any:
    return getattr(_options_of(record), "json_data", None)


def _summary(record: CallRecord) -> Dict[str, Any]:
    """Everything a CallRecord says that does not change from run to run."""
    options = _options_of(record)
    request = record.request
    error = record.error
    return {
        "provider": record.provider,
        "params": _plain(record.call.params),
        "headers": _plain(record.call.headers(X_PAYI)),
        "proxy headers": _plain(record.call.headers(PAYI_PROXY)),
        "attributes": _plain(record.call.attributes()),
        "request_model": record.request_model,
        "response_model": record.response_model,
        "usage": record.usage,
        "service": record.service,
        "streamed": record.streamed,
        "first item": record.first_item_s is not None,
        "error": None
        if error is None
        else (type(error).__name__, getattr(error, "status_code", None)),
        "request": None
        if request is None
        else (request.url, request.model, _plain(request.headers), _plain(request.other_headers)),
        "options": None
        if options is None
        else (options.url, _plain(options.headers), _plain(getattr(options, "json_data", None))),
        "span": (getattr(record.span, "name", None), _span_attributes(record.span)),
        "context's span": getattr(trace.get_current_span(record.context), "name", None),
        "response": type(record.response).__name__,
    }


Scenario = Callable[[Env], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    """Which SDK, which client, which way its plain calls go (``Env.call``)."""

    sdk: str
    is_async: bool
    style: str = "create"

    @property
    def id(self) -> str:
        style = "" if self.style == "create" else f".{self.style}"
        return f"{self.sdk}{style}-{'async' if self.is_async else 'sync'}"


def _run(
    genai: GenAI, scenario: Scenario, kind: Kind, planned: bool, after: Optional[Env] = None
) -> Tuple[Outcome, Env]:
    """``scenario`` played once (``after`` a run of it), on a fresh server log and the
    ``genai`` fixture's settings: instrumented again after a run that changed them."""
    genai.check_invariant = False  # this file checks every request itself (Env.check)
    if after is not None and after.changed:
        genai.reinstrument(caller_file="<test>")
    genai.server.reset()
    genai.otel.exporter.clear()
    with pytest.MonkeyPatch.context() as mp:
        env = Env(genai, SDKS[kind.sdk], kind.is_async, planned, mp, kind.style)
        env.spy.install(mp)
        if not planned:
            mp.setattr(StainlessProvider, "plan_key", _no_plan)
        env.observe()

        async def play() -> None:
            try:
                await scenario(env)
            finally:
                await env.close()

        asyncio.run(play())
        env._remove()
    env.check()
    return env.outcome(), env


def assert_same(genai: GenAI, scenario: Scenario, kind: Kind) -> Env:
    """The scenario's outcome with plans equals its outcome without; the planned run's env."""
    planned, env = _run(genai, scenario, kind, planned=True)
    whole, whole_env = _run(genai, scenario, kind, planned=False, after=env)
    assert not any(whole_env.spy.log), "the shortcut off, a call was planned"
    assert planned.requests == whole.requests
    assert planned.sent == whole.sent
    assert planned.spans == whole.spans
    assert len(planned.records) == len(whole.records)
    for mine, theirs in zip(planned.records, whole.records):
        assert mine == theirs
    return env


# === the scenarios ============================================================================
#
# Each is played with the shortcut and without; ``planned=`` says which path each call takes.


async def plain_call(env: Env) -> None:
    client = env.client()
    with track_context(user_id="alice"):
        await env.call(client, "as:alice one")
        await env.call(client, "as:alice two")
    await env.call(client, "no scope")


async def nested_scopes(env: Env) -> None:
    client = env.client()
    outer = {"user_id": "outer", "request_properties": {"team": "a"}, "limit_ids": ["l1"]}
    with track_context(**outer):  # type: ignore[arg-type]
        await env.call(client, "as:outer first")
        with track_context(
            use_case_name="flow",
            user_id="inner",
            request_properties={"team": "b", "k": "v"},
            limit_ids=["l2"],
        ):
            await env.call(client, "as:inner")
            with track_context(account_name="acct", use_case_version=2):
                await env.call(client, "as:inner deeper")
        await env.call(client, "as:outer again")


async def alternating_users(env: Env) -> None:
    """One client, one plan, calls of two users' scopes in turn: each carries its own."""
    client = env.client()
    for turn in range(6):
        user = ("alice", "bob")[turn % 2]
        with track_context(user_id=user, request_properties={"turn": str(turn)}):
            await env.call(client, f"as:{user} turn {turn}")


CONCURRENT_USERS = 6
CALLS_EACH = 6


async def concurrent_users(env: Env) -> None:
    """Threads (sync clients) or tasks (async ones), each its own user, sharing one client
    (one plan) and each with a client of its own, in turn."""
    env.ordered = False
    shared = env.client()

    async def calls(user: str, own: Any) -> None:
        with track_context(user_id=user):
            for i in range(CALLS_EACH):
                client = shared if i % 2 else own
                await env.call(client, f"as:{user} call {i}", planned=None)

    users = [f"user{n}" for n in range(CONCURRENT_USERS)]
    if env.is_async:
        await asyncio.gather(*(calls(user, env.client()) for user in users))
    else:
        owns = [env.client() for _ in users]
        with ThreadPoolExecutor(max_workers=CONCURRENT_USERS) as pool:
            futures = [pool.submit(asyncio.run, calls(user, own)) for user, own in zip(users, owns)]
            for future in futures:
                future.result()
    env.expect_total(CONCURRENT_USERS * CALLS_EACH)


async def models_per_call(env: Env) -> None:
    client = env.client()
    first, second = env.sdk.models
    with track_context(user_id="mia"):
        for model in (first, second, first, second):
            await env.call(client, "as:mia", model=model)
        await env.call(client, "as:mia", model=first, stream=False)


async def endpoints(env: Env) -> None:
    """Calls of one client to its endpoints (another relative URL each: another plan)."""
    client = env.client()
    with track_context(user_id="eve"):
        if env.sdk.name == "openai":
            await env.call(client, "as:eve chat")
            await env.do(lambda: client.responses.create(model="gpt-4o-mini", input="as:eve"))
            await env.do(
                lambda: client.embeddings.create(model="text-embedding-3-small", input="as:eve")
            )
            await env.do(
                lambda: client.completions.create(model="gpt-3.5-turbo-instruct", prompt="as:eve")
            )
            await env.do(lambda: client.models.list())
            await env.call(client, "as:eve chat again")
        else:
            message = [{"role": "user", "content": "as:eve count"}]
            await env.call(client, "as:eve message")
            await env.do(
                lambda: client.messages.count_tokens(model=env.sdk.models[0], messages=message),
                env.resource_planned,
            )
            await env.do(lambda: client.models.list(), env.resource_planned)
            await env.call(client, "as:eve message again")


async def with_options(env: Env) -> None:
    client = env.client()
    user_header = "X-Payi-User-Id"
    with track_context(user_id="will"):
        await env.call(client, "as:will")
        await env.call(client.with_options(timeout=30.0), "as:will timeout")
        await env.call(client.with_options(default_headers={"X-Team": "t"}), "as:will team")
        await env.call(client.with_options(base_url=env.sdk.url(GATEWAY)), "as:will gateway")
        await env.call(client.with_options(base_url=env.sdk.url(env.sdk.public)), "as:will public")
        await env.call(
            client.with_options(default_headers={user_header: "opt"}), "as:opt", planned=False
        )
        await env.call(client, "as:will again")


async def base_url_set_again(env: Env) -> None:
    """The plan follows the client's base URL: each call goes to its new host, with the
    headers the policy decides for that host (none to the provider's public host)."""
    sdk = env.sdk
    client = env.client(sdk.url(GATEWAY))
    hosts = (GATEWAY, sdk.public, OTHER, GATEWAY, sdk.public, GATEWAY)
    with track_context(user_id="bea"):
        for host in hosts:
            client.base_url = sdk.url(host)
            await env.call(client, "as:bea")
    assert [s.url.split("/")[2] for s in env.sent] == list(hosts)
    users = [dict(s.attribution).get("x-payi-user-id") for s in env.sent]
    assert users == ["bea", None, "bea", "bea", None, "bea"]


async def service_by_host(env: Env) -> None:
    """A service told by the host (Azure's for openai, Bedrock Mantle's for anthropic) is
    the new base URL's after it is set."""
    sdk = env.sdk
    client = env.client(sdk.url(sdk.service_host))
    with track_context(user_id="sam"):
        for host in (sdk.service_host, GATEWAY, sdk.service_host, GATEWAY):
            client.base_url = sdk.url(host)
            await env.call(client, "as:sam")
    services = [r.service is not None for r in env.records]
    assert services == [True, False, True, False]


async def module_client(env: Env) -> None:
    """openai's module-level client (``openai.chat...``), ``openai.base_url`` and
    ``openai.api_key`` set between calls."""
    mp = env.mp

    def url(host: str) -> str:
        return env.sdk.url(host) + "/"  # the module's base_url is taken as set

    mp.setenv("OPENAI_BASE_URL", url(GATEWAY))
    mp.setattr(openai, "_client", None)
    mp.setattr(openai, "base_url", None)
    mp.setattr(openai, "api_key", "test")
    mp.setattr(openai, "max_retries", 0)
    mp.setattr(openai, "http_client", env.http_client(False))

    def create(text: str) -> Any:
        messages = [{"role": "user", "content": text}]
        return openai.chat.completions.create(model="gpt-4o-mini", messages=messages)

    with track_context(user_id="moe"):
        await env.do(lambda: create("as:moe gateway"))
        openai.base_url = url(env.sdk.public)
        await env.do(lambda: create("as:moe public"))
        openai.api_key = "other"
        await env.do(lambda: create("as:moe public again"))
        openai.base_url = url(OTHER)
        await env.do(lambda: create("as:moe other"))
        openai.base_url = None
        await env.do(lambda: create("as:moe gateway again"))
    hosts = [s.url.split("/")[2] for s in env.sent]
    assert hosts == [GATEWAY, env.sdk.public, env.sdk.public, OTHER, GATEWAY]


async def default_headers(env: Env) -> None:
    """Client defaults: other headers keep the shortcut (an ``xProxy-*`` header that is no
    parameter's too); any attribution header, in any case or dialect, takes the whole path."""
    plain = env.client(default_headers={"X-Team": "t", "xProxy-Trace-Id": "abc"})
    by_name = env.client(default_headers={"X-Payi-User-Id": "cli", "X-Team": "t"})
    shouting = env.client(default_headers={"X-PAYI-REQUEST-PROPERTIES": '{"c": "1"}'})
    proxy = env.client(default_headers={"xproxy-user-id": "prox"})
    with track_context(user_id="dan", request_properties={"s": "1"}):
        await env.call(plain, "as:dan")
        await env.call(by_name, "as:cli", planned=False)
        await env.call(shouting, "as:dan", planned=False)
        await env.call(proxy, "as:prox", planned=False)
        omit = openai.Omit() if env.sdk.name == "openai" else anthropic.Omit()
        await env.call(by_name, "as:dan", extra_headers={"x-payi-user-id": omit}, planned=False)
        await env.call(plain, "as:dan again")


async def extra_headers(env: Env) -> None:
    client = env.client()
    with track_context(user_id="ed", limit_ids=["scope"]):
        await env.call(client, "as:ed")
        await env.call(client, "as:call", extra_headers={"X-Payi-User-Id": "call"}, planned=False)
        # Headers of the call's own, none of them attribution headers: planned.
        await env.call(client, "as:ed team", extra_headers={"X-Team": "t"})
        await env.call(client, "as:prox", extra_headers={"XPROXY-USER-ID": "prox"}, planned=False)
        await env.call(
            client, "as:ed limits", extra_headers={"x-payi-limit-ids": ""}, planned=False
        )
        await env.call(client, "as:ed empty", extra_headers={})
        await env.call(client, "as:ed again")


async def raw_responses(env: Env) -> None:
    client = env.client()
    with track_context(user_id="rae"):
        # with_raw_response's marker header is no attribution header: planned; the raw
        # response is observed as on the whole path.
        await env.call(client, "as:rae raw", raw=True)
        await env.call(client, "as:rae")
        await env.call(client, "as:rae raw again", raw=True)
        await env.call(client, "as:rae again")


async def streams(env: Env) -> None:
    client = env.client()
    with track_context(user_id="stu"):
        await env.call(client, "as:stu stream", stream=True, planned=False)
        await env.call(client, "as:stu")
        await env.call(client, "as:stu not a stream", stream=False)
        if env.sdk.name == "openai":
            asked = {"include_usage": True}
            await env.call(client, "as:stu asked", stream=True, stream_options=asked, planned=False)
        await env.call(client, "as:stu stream again", stream=True, planned=False)
        await env.call(client, "as:stu again")


async def errors(env: Env) -> None:
    client = env.client()
    failed = (openai.APIError, anthropic.APIError)
    with track_context(user_id="fay"):
        for mode in ("500", "400", "429", "reset"):
            env.server.fail_next(1, mode)
            with pytest.raises(failed):
                await env.call(client, f"as:fay {mode}")
            await env.call(client, "as:fay ok")
    assert [r.error is not None for r in env.records] == [True, False] * 4


MAPPINGS = {
    "openai": {
        "model": "gpt-4o-mini",
        "price_as_category": "system.openai",
        "price_as_resource": "gpt-4o",
    },
    "anthropic": {
        "model": "claude-haiku-4-5",
        "price_as_category": "system.anthropic",
        "price_as_resource": "claude-sonnet-4-6",
    },
}


async def settings_under_live_plans(env: Env) -> None:
    """New settings in force while the plans stay: the dialect, the hosts and the mappings
    are the ones in force at each call."""
    client = env.client()
    first, second = env.sdk.models
    mapped = parse_mappings([MAPPINGS[env.sdk.name]], "model_mappings")
    with track_context(user_id="liv", request_properties={"p": "1"}):
        await env.call(client, "as:liv")
        env.install(wire=WirePolicy(dialect=PAYI_PROXY))
        await env.call(client, "as:liv proxy")
        env.install(wire=WirePolicy(hosts=("nothing.example",)))
        await env.call(client, "as:liv nowhere")
        env.install(wire=WirePolicy(hosts=("127.0.0.1",), dialect=PAYI_PROXY))
        await env.call(client, "as:liv local only")
        env.install(wire=WirePolicy(), model_mappings=mapped)
        await env.call(client, "as:liv mapped", model=first, planned=False)
        await env.call(client, "as:liv not mapped", model=second, planned=False)
        env.install(model_mappings=())
        await env.call(client, "as:liv", model=first)
        env.install(standard_attributes=True, session_property="p")
        await env.call(client, "as:liv standard", model=first)
    mapped_headers = [dict(s.attribution).get("x-payi-price-as-resource") for s in env.sent]
    assert mapped_headers == [None] * 4 + [MAPPINGS[env.sdk.name]["price_as_resource"]] + [None] * 3


async def settings_reinstrumented(env: Env) -> None:
    """payi_otel instrumented again between calls, each time with other settings."""
    client = env.client()
    steps: List[Tuple[Dict[str, Any], bool]] = [
        ({"caller_file": "/srv/app.py"}, True),  # a default use case (its id made once)
        ({"config": {"user_id": "glob", "limit_ids": ["g"]}}, True),
        ({"header_dialect": "payi-proxy"}, True),
        ({"header_hosts": ["nothing.example"]}, True),
        ({"header_hosts": ["127.0.0.1", GATEWAY]}, True),
        ({"model_mappings": [MAPPINGS[env.sdk.name]]}, False),
        ({"propagate_baggage": True}, False),
        ({"standard_attributes": True, "session_property": "session"}, True),
        ({"genai_spans": False}, True),
        ({}, True),
    ]
    for options, planned in steps:
        env.reinstrument(**options)
        with track_context(user_id="ivy", request_properties={"session": "s1"}):
            await env.call(client, "as:ivy", planned=planned)
            await env.call(client, "as:ivy again", planned=planned)


async def current_span(env: Env) -> None:
    """No GenAI instrumentation: the span current at the call (the caller's GenAI span) gets
    the attributes."""
    env.reinstrument(genai_spans=False)
    client = env.client()
    with track_context(user_id="cy"):
        with env.genai.genai_span(system=env.sdk.name):
            await env.call(client, "as:cy in a span")
        await env.call(client, "as:cy")
    with env.genai.genai_span(system=env.sdk.name):
        with track_context(user_id="cy2"):
            await env.call(client, "as:cy2 scope in a span")


async def a_call_inside_a_call(env: Env) -> None:
    """A call made while another is being sent (here: by the outer call's transport): its
    context is the outer call's when that one attached its own (a header of its own)."""
    inner = env.client()

    def during() -> None:
        body = {"model": env.sdk.models[1], "messages": [{"role": "user", "content": "inner"}]}
        if env.sdk.name == "openai":
            inner.chat.completions.create(**body)
        else:
            inner.messages.create(max_tokens=64, **body)

    outer = env.client(during=during)
    with track_context(user_id="ned"):
        both = [env.plain_planned, env.resource_planned]
        await env.call(outer, "as:ned", planned=both)
        await env.call(
            outer, "as:own", extra_headers={"x-payi-user-id": "own"}, planned=[False, False]
        )
        await env.call(outer, "as:ned again", planned=both)


def _routing(env: Env) -> Callable[[Any, str], Any]:
    """A ``_prepare_url`` of a gateway that picks the host per call (its ``target``), as
    Azure's and Vertex's clients join URLs their own way."""
    path = env.sdk.base_path

    def _prepare_url(self: Any, url: str) -> Any:
        return httpx2.URL(f"https://{self.target}{path}/{url.lstrip('/')}")

    return _prepare_url


async def own_prepare_url(env: Env) -> None:
    """A client class with its own ``_prepare_url``, or a client given one of its own, is
    asked every call: never planned; each call goes where it says, with the headers the
    policy decides for that host."""
    prepare = _routing(env)

    def routed(cls: type) -> type:
        return type("Routed", (cls,), {"target": GATEWAY, "_prepare_url": prepare})

    by_class = env.client(subclass=routed)
    by_instance = env.client()
    by_instance._prepare_url = prepare.__get__(by_instance)
    hosts = (GATEWAY, env.sdk.public, OTHER, env.sdk.public, GATEWAY)
    with track_context(user_id="rob"):
        for client in (by_class, by_instance):
            for host in hosts:
                client.target = host
                await env.call(client, "as:rob", planned=False)
    assert [s.url.split("/")[2] for s in env.sent] == list(hosts) * 2
    assert [s.sends for s in env.sent] == [True, False, True, False, True] * 2


async def prepare_url_replaced_later(env: Env) -> None:
    """A client class whose ``_prepare_url`` is replaced after its first calls (a gateway
    shim, an instrumentation patching the class): from then on its calls go where the new
    one says - the whole path asks it every call, so a planned call must not keep the URL
    the SDK's own gave."""
    sdk = env.sdk

    def plain_subclass(cls: type) -> type:
        return type("Patched", (cls,), {"target": sdk.public})

    client = env.client(sdk.url(GATEWAY), subclass=plain_subclass)
    with track_context(user_id="pia"):
        await env.call(client, "as:pia")  # the SDK's own _prepare_url: the gateway
        type(client)._prepare_url = _routing(env)  # now every call goes to the public host
        await env.call(client, "as:pia", planned=False)
        await env.call(client, "as:pia", planned=False)
    assert [s.url.split("/")[2] for s in env.sent] == [GATEWAY, sdk.public, sdk.public]


async def plans_forgotten(env: Env) -> None:
    """More plan keys than ``PLANS_MAX``: the plans are forgotten and made again."""
    env.mp.setattr(_core, "PLANS_MAX", 2)
    sdk = env.sdk
    client = env.client()
    with track_context(user_id="pat"):
        for _ in range(3):
            for host in (GATEWAY, OTHER, sdk.public):
                client.base_url = sdk.url(host)
                await env.call(client, "as:pat")
    assert [s.sends for s in env.sent] == [True, True, False] * 3
    assert all(len(plans) <= 2 for plans in env.spy.plans)


class ReusedIds:
    """``id`` at its weakest promise: unique among live objects only - a dropped object's
    number goes to the next object asked for (as CPython's allocator may hand its address to
    the next object made), so a plan key naming a base URL by id meets a reused one at once
    rather than by chance."""

    def __init__(self) -> None:
        self.free: List[int] = []
        self.made = 0
        self.known: Dict[int, Tuple[Any, int]] = {}

    def __call__(self, obj: object) -> int:
        address = builtins.id(obj)
        known = self.known.get(address)
        if known is not None and known[0]() is obj:
            return known[1]
        if self.free:
            number = self.free.pop()
        else:
            self.made += 1
            number = self.made
        self.known[address] = (weakref.ref(obj), number)
        weakref.finalize(obj, self._release, address, number)
        return number

    def _release(self, address: int, number: int) -> None:
        self.known.pop(address, None)
        self.free.append(number)


async def base_url_ids_reused(env: Env) -> None:
    """Base URL objects set and dropped, many times, their ids reused at once
    (:class:`ReusedIds`; the URL cache holding one at most): the plans keep their base URLs
    alive, so no new base URL ever finds a dropped one's plan."""
    env.mp.setattr(_stainless, "URLS_MAX", 1)
    env.mp.setattr(_stainless, "id", ReusedIds(), raising=False)
    sdk = env.sdk
    client = env.client()
    hosts = (GATEWAY, sdk.public, OTHER) * 3
    with track_context(user_id="fio"):
        for host in hosts:
            client.base_url = sdk.url(host)
            await env.call(client, "as:fio")
    assert [s.url.split("/")[2] for s in env.sent] == list(hosts)
    assert [s.sends for s in env.sent] == [host != sdk.public for host in hosts]


async def two_classes_one_base_url(env: Env) -> None:
    """Clients of two classes on one base URL object (``client.base_url = other.base_url``):
    ``AnthropicBedrockMantle``'s calls go to Bedrock by its class, ``Anthropic``'s to
    Anthropic - the class is part of the plan key."""
    kinds = (anthropic.AnthropicBedrockMantle, anthropic.AsyncAnthropicBedrockMantle)
    cls: Any = kinds[env.is_async]
    mantle = cls(
        base_url=env.sdk.url(GATEWAY),
        aws_region="us-east-1",
        api_key="k",
        max_retries=0,
        http_client=env.http_client(),
    )
    plain = env.client()
    plain.base_url = mantle.base_url
    assert plain._base_url is mantle._base_url  # one object: one id in both keys
    with track_context(user_id="tom"):
        for client in (mantle, plain, mantle, plain):
            await env.call(client, "as:tom", model="anthropic.claude-3-5-haiku-20241022-v1:0")
    services = [r.service.category if r.service else None for r in env.records]
    assert services == ["system.aws.bedrock", None] * 2


async def spanless_scopes(env: Env) -> None:
    """Scopes that start no span (``scope_spans=False``) inside a GenAI span of the caller's:
    each call sets that span's attributes to its own parameters."""
    env.reinstrument(scope_spans=False, genai_spans=False)
    client = env.client()
    with env.genai.genai_span(system=env.sdk.name):
        with track_context(user_id="sue", limit_ids=["l1"]):
            await env.call(client, "as:sue")
            with track_context(user_id="sid", request_properties={"k": "v"}):
                await env.call(client, "as:sid")
            await env.call(client, "as:sue back")
        await env.call(client, "no scope")


async def payi_baggage(env: Env) -> None:
    """``payi.*`` baggage in the caller's context (incoming, outside payi_otel's scopes):
    the context cannot be sent as it is (the provider gets no payi.* baggage), whole path."""
    client = env.client()
    ctx = baggage.set_baggage("payi.user_id", "bag")
    ctx = baggage.set_baggage("tenant", "t1", ctx)
    token = otel_context.attach(ctx)
    try:
        await env.call(client, "incoming baggage only", planned=False)
        with track_context(user_id="bay"):
            await env.call(client, "as:bay", planned=False)
    finally:
        otel_context.detach(token)
    with track_context(user_id="bay"):
        await env.call(client, "as:bay")


OPENAI = [Kind("openai", False), Kind("openai", True)]
ANTHROPIC = [Kind("anthropic", False), Kind("anthropic", True)]
#: anthropic's plain calls through ``post``: its calls the shortcut takes (``Env.call``).
ANTHROPIC_POST = [Kind("anthropic", False, "post"), Kind("anthropic", True, "post")]
EVERY = OPENAI + ANTHROPIC + ANTHROPIC_POST
RESOURCES = OPENAI + ANTHROPIC
SYNC = [Kind("openai", False), Kind("anthropic", False), Kind("anthropic", False, "post")]
#: The kinds whose plain calls the shortcut takes (anthropic's resource calls: whole path).
PLANNED = OPENAI + ANTHROPIC_POST
SCENARIOS: List[Tuple[Scenario, List[Kind]]] = [
    (plain_call, EVERY),
    (nested_scopes, PLANNED),
    (alternating_users, EVERY),
    (concurrent_users, PLANNED),
    (models_per_call, PLANNED),
    (endpoints, RESOURCES),
    (with_options, PLANNED),
    (base_url_set_again, PLANNED),
    (service_by_host, PLANNED),
    (own_prepare_url, PLANNED),
    (prepare_url_replaced_later, PLANNED),
    (plans_forgotten, PLANNED),
    (base_url_ids_reused, PLANNED),
    (two_classes_one_base_url, ANTHROPIC_POST),
    (module_client, [Kind("openai", False)]),
    (default_headers, EVERY),
    (extra_headers, EVERY),
    (raw_responses, RESOURCES),
    (streams, RESOURCES),
    (errors, EVERY),
    (payi_baggage, PLANNED),
    (settings_under_live_plans, PLANNED),
    (settings_reinstrumented, PLANNED),
    (current_span, PLANNED),
    (spanless_scopes, PLANNED),
    (a_call_inside_a_call, SYNC),
]
CASES = [
    pytest.param(scenario, kind, id=f"{scenario.__name__}-{kind.id}")
    for scenario, kinds in SCENARIOS
    for kind in kinds
]


@pytest.mark.parametrize(("scenario", "kind"), CASES)
def test_a_planned_call_is_the_whole_paths_call(
    genai: GenAI, scenario: Scenario, kind: Kind
) -> None:
    assert_same(genai, scenario, kind)


@pytest.mark.parametrize("kind", PLANNED, ids=[k.id for k in PLANNED])
def test_the_shortcut_is_taken_and_turning_it_off_turns_it_off(genai: GenAI, kind: Kind) -> None:
    """As shipped, the first call of a plan key fills its plan and later calls use it; with
    ``plan_key`` answering None (how every differential test turns the shortcut off),
    ``_planned`` never gives a plan and no plan is remembered."""

    async def three_calls(env: Env) -> None:
        client = env.client()
        for user in ("a", "b", "a"):
            with track_context(user_id=user):
                await env.call(client, f"as:{user}")

    _, planned = _run(genai, three_calls, kind, planned=True)
    assert planned.spy.log == [True, True, True]
    assert [len(plans) for plans in planned.spy.plans] == [1]  # one key, one plan, reused
    (plan,) = planned.spy.plans[0].values()
    assert plan.request.model == SDKS[kind.sdk].models[0]
    assert plan.request.url == planned.records[0].request.url
    assert [r.call.params.get("user_id") for r in planned.records] == ["a", "b", "a"]

    genai.reinstrument(caller_file="<test>")  # new wrappers: their plans start empty
    _, whole = _run(genai, three_calls, kind, planned=False)
    assert whole.spy.log == [False, False, False]
    assert [len(plans) for plans in whole.spy.plans] == [0]
    assert [r.call.params.get("user_id") for r in whole.records] == ["a", "b", "a"]


def test_anthropic_resource_calls_are_planned_with_their_own_headers(genai: GenAI) -> None:
    """anthropic's resource methods (2.x: ``messages.create``, ``count_tokens``,
    ``models.list``) send headers of their own (``Omit`` values for
    ``anthropic-workspace-id`` / ``anthropic-user-profile-id``): none is an attribution
    header, so the shortcut takes them, and the SDK is handed them as it gave them."""

    async def calls(env: Env) -> None:
        client = env.client()
        with track_context(user_id="ann"):
            await env.call(client, "as:ann")
            await env.do(lambda: client.models.list())

    _, env = _run(genai, calls, Kind("anthropic", False), planned=True)
    assert env.spy.log == [True, True]
    own = ("anthropic-workspace-id", "anthropic-user-profile-id")
    assert all(set(_options_of(r).headers) & set(own) for r in env.records)
