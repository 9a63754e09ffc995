"""Contract section 3a on the wire: Pay-i's ``xProxy-*`` names as input, the ``payi-proxy``
output dialect, and the destination policy (provider hosts, allow-lists, redirects), with the
real SDKs against local servers only (a provider host is routed to 127.0.0.1 by the httpx
client's transport while the URL the SDK and payi_otel see keeps the provider's host)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import openai

try:
    import httpx2
except ImportError:  # anthropic < 2 sends through httpx
    httpx2 = httpx  # type: ignore[no-redef]
import pytest
from fake_llm_server import FakeLLMServer, RecordedRequest
from fixtures_genai import CHAT, MESSAGE, GenAI
from fixtures_server import to_local as _to_local

from payi_otel import ParameterValueError, track_context


def attribution(request: RecordedRequest, use_case: bool = True) -> dict[str, str]:
    return {
        k: v
        for k, v in request.headers.items()
        if k.startswith(("x-payi-", "xproxy-"))
        and (use_case or ("use-case" not in k and "usecase" not in k))
    }


def posing_openai(server: FakeLLMServer, host: str = "api.openai.com") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"https://{host}/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.Client(transport=_to_local(server)),
    )


def posing_anthropic(server: FakeLLMServer) -> anthropic.Anthropic:
    http_module = getattr(anthropic._base_client, "httpx2", None)
    module: Any = httpx2 if http_module is httpx2 else httpx
    client = module.Client(transport=_to_local(server, module))
    return anthropic.Anthropic(
        base_url="https://api.anthropic.com", api_key="test", max_retries=0, http_client=client
    )


def reinstrument_with_env(genai: GenAI, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """payi_otel again with these variables set (spans then differ from the headers sent)."""
    genai.check_invariant = False
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    genai.reinstrument()


SCOPE: dict[str, Any] = {
    "use_case_name": "support",
    "use_case_id": "uc-1",
    "use_case_version": 3,
    "use_case_step": "answer",
    "use_case_properties": {"tier": "gold", "lang": "fr\u00e9"},
    "experience_name": "exp",
    "limit_ids": ["l1", "l2"],
    "request_tags": ["t1"],
    "user_id": "u-1",
    "account_name": "acme",
    "request_properties": {"k": "v"},
    "price_as_category": "cat",
    "price_as_resource": "res",
    "resource_scope": "global",
}


# --- input: both spellings ------------------------------------------------------------------


def test_pay_i_names_are_accepted_case_insensitively(genai: GenAI) -> None:
    genai.openai.chat.completions.create(
        **CHAT,
        extra_headers={
            "xProxy-User-ID": "alice",
            "XPROXY-LIMIT-IDS": "a, b",
            "xproxy-request-properties": '{"p":"1"}',
            "xProxy-UseCase-Name": "uc",
            "xProxy-Api-Key": "payi-key",  # not a parameter: the caller's own, passed through
        },
    )
    sent = attribution(genai.server.requests[-1])
    assert sent["x-payi-user-id"] == "alice"
    assert sent["x-payi-limit-ids"] == "a,b"
    assert sent["x-payi-request-properties"] == '{"p":"1"}'
    assert sent["x-payi-use-case-name"] == "uc"
    assert sent["xproxy-api-key"] == "payi-key"
    assert not any(k.startswith("xproxy-") and k != "xproxy-api-key" for k in sent)


def test_both_spellings_with_one_value_are_one_parameter(genai: GenAI) -> None:
    genai.openai.chat.completions.create(
        **CHAT, extra_headers={"x-payi-limit-ids": "a,b", "xProxy-Limit-IDs": "a, b"}
    )
    assert genai.last()["x-payi-limit-ids"] == "a,b"


def test_both_spellings_with_different_values_raise_and_send_nothing(genai: GenAI) -> None:
    genai.check_invariant = False  # the call's GenAI span exists; no request was sent
    with pytest.raises(ParameterValueError) as raised:
        genai.openai.chat.completions.create(
            **CHAT, extra_headers={"x-payi-user-id": "alice", "xProxy-User-ID": "bob"}
        )
    assert "'x-payi-user-id'" in str(raised.value) and "'xProxy-User-ID'" in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert genai.server.requests == []


def test_a_call_header_overrides_a_client_default_in_the_other_spelling(genai: GenAI) -> None:
    client = genai.openai_client(default_headers={"x-payi-user-id": "default"})
    client.chat.completions.create(**CHAT, extra_headers={"xProxy-User-ID": "call"})
    assert genai.last()["x-payi-user-id"] == "call"


# --- output: the payi-proxy dialect ---------------------------------------------------------


def test_payi_proxy_dialect_is_what_pay_i_sends_and_spans_do_not_change(genai: GenAI) -> None:
    genai.check_invariant = False  # the invariant compares spans with x-payi-* headers
    genai.reinstrument(header_dialect="payi-proxy")
    with track_context(**SCOPE):
        genai.openai.chat.completions.create(**CHAT)
    # Names are case-insensitive; the SDK sends them lower-cased (Pay-i's SDK too).
    sent = attribution(genai.server.requests[-1])
    props = base64.b64encode(b'{"tier":"gold","lang":"fr\\u00e9"}').decode()
    assert sent == {
        k.lower(): v
        for k, v in {
            "xProxy-UseCase-Name": "support",
            "xProxy-UseCase-ID": "uc-1",
            "xProxy-UseCase-Version": "3",
            "xProxy-UseCase-Step": "answer",
            "xProxy-UseCase-Properties": props,
            "xProxy-Limit-IDs": "l1,l2",
            "xProxy-User-ID": "u-1",
            "xProxy-Account-Name": "acme",
            "xProxy-Request-Properties": base64.b64encode(b'{"k":"v"}').decode(),
            "xProxy-PriceAs-Category": "cat",
            "xProxy-PriceAs-Resource": "res",
            "xProxy-Resource-Scope": "global",
        }.items()
    }
    assert json.loads(base64.b64decode(sent["xproxy-usecase-properties"])) == {
        "tier": "gold",
        "lang": "fr\u00e9",
    }
    (attrs,) = genai.span_attrs()
    assert attrs["payi.experience.name"] == "exp" and attrs["payi.request_tags"] == ["t1"]
    assert attrs["payi.use_case.properties.lang"] == "fr\u00e9"
    assert attrs["payi.limit_ids"] == ["l1", "l2"]


def test_payi_proxy_dialect_from_the_environment(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    reinstrument_with_env(genai, monkeypatch, PAYI_HEADER_DIALECT="payi-proxy")
    with track_context(user_id="u"):
        genai.anthropic.messages.create(**MESSAGE)
    assert attribution(genai.server.requests[-1])["xproxy-user-id"] == "u"
    assert not any(k.startswith("x-payi-") for k in genai.server.requests[-1].headers)


def test_an_unknown_dialect_is_a_value_error(genai: GenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="header_dialect"):
        genai.reinstrument(header_dialect="grpc")
    monkeypatch.setenv("PAYI_HEADER_DIALECT", "nope")
    with pytest.raises(ValueError, match="PAYI_HEADER_DIALECT"):
        genai.reinstrument()


# --- destinations -----------------------------------------------------------------------------


def test_provider_public_hosts_get_no_attribution_headers_but_spans_keep_them(
    genai: GenAI,
) -> None:
    genai.check_invariant = False
    with track_context(user_id="alice", limit_ids=["l"]):
        posing_openai(genai.server).chat.completions.create(
            **CHAT, extra_headers={"x-payi-account-name": "acme", "xProxy-User-ID": "bob"}
        )
        posing_openai(genai.server, "my-res.openai.azure.com").chat.completions.create(**CHAT)
        posing_anthropic(genai.server).messages.create(**MESSAGE)
    assert [r.headers["host"] for r in genai.server.requests] == [
        "api.openai.com",
        "my-res.openai.azure.com",
        "api.anthropic.com",
    ]
    assert [attribution(r) for r in genai.server.requests] == [{}, {}, {}]
    first = genai.span_attrs()[0]
    assert first["payi.user_id"] == "bob" and first["payi.account_name"] == "acme"
    assert all(a["payi.limit_ids"] == ["l"] for a in genai.span_attrs())


async def test_provider_hosts_async_clients_too(genai: GenAI) -> None:
    genai.check_invariant = False
    client = openai.AsyncOpenAI(
        base_url="https://api.openai.com/v1",
        api_key="test",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=_to_local(genai.server, is_async=True)),
    )
    with track_context(user_id="alice"):
        await client.chat.completions.create(**CHAT)
    assert attribution(genai.server.requests[-1]) == {}


def test_allow_listed_hosts_get_them_and_the_list_is_exclusive(genai: GenAI) -> None:
    genai.check_invariant = False
    genai.reinstrument(header_hosts=["api.openai.com"], header_dialect="payi-proxy")
    with track_context(user_id="alice"):
        posing_openai(genai.server).chat.completions.create(**CHAT)
        posing_anthropic(genai.server).messages.create(**MESSAGE)
        genai.openai.chat.completions.create(**CHAT)  # loopback, not on the list
    assert [attribution(r, use_case=False) for r in genai.server.requests] == [
        {"xproxy-user-id": "alice"},
        {},
        {},
    ]


def test_allow_list_from_the_environment_with_wildcards(
    genai: GenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    reinstrument_with_env(genai, monkeypatch, PAYI_HEADER_HOSTS="*.openai.azure.com, 127.0.0.1")
    with track_context(user_id="alice"):
        posing_openai(genai.server, "eu.openai.azure.com").chat.completions.create(**CHAT)
        posing_openai(genai.server).chat.completions.create(**CHAT)
        genai.openai.chat.completions.create(**CHAT)
    assert [attribution(r, use_case=False) for r in genai.server.requests] == [
        {"x-payi-user-id": "alice"},
        {},
        {"x-payi-user-id": "alice"},
    ]


def test_loopback_and_unknown_hosts_get_them_by_default(genai: GenAI) -> None:
    with track_context(user_id="alice"):
        genai.openai.chat.completions.create(**CHAT)
        posing_openai(genai.server, "gateway.internal").chat.completions.create(**CHAT)
    assert [attribution(r) for r in genai.server.requests] == [
        {"x-payi-user-id": "alice"},
        {"x-payi-user-id": "alice"},
    ]


class _Redirector(ThreadingHTTPServer):
    """Answers every request with a 307 to ``target`` + path, recording what it received."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.received: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.received.append({k.lower(): v for k, v in self.headers.items()})
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(307)
                self.send_header("location", outer.target + self.path)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def redirector(llm_server: FakeLLMServer) -> Iterator[_Redirector]:
    # The target is "localhost": another origin than 127.0.0.1:<redirector port>.
    port = int(llm_server.base_url.rsplit(":", 1)[1])
    server = _Redirector(f"http://localhost:{port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_cross_origin_redirect_carries_no_attribution_header(
    genai: GenAI, redirector: _Redirector
) -> None:
    genai.check_invariant = False
    client = openai.OpenAI(
        base_url=redirector.url + "/v1",
        api_key="test",
        max_retries=0,
        default_headers={"xProxy-Api-Key": "payi-key"},
    )
    with track_context(user_id="alice"):
        reply = client.chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "echo: Hello"
    assert redirector.received[0]["x-payi-user-id"] == "alice"  # the first hop: loopback
    (followed,) = genai.server.requests
    assert attribution(followed) == {}
    assert followed.headers["host"].startswith("localhost:")


async def test_a_cross_origin_redirect_async(genai: GenAI, redirector: _Redirector) -> None:
    genai.check_invariant = False
    client = openai.AsyncOpenAI(base_url=redirector.url + "/v1", api_key="test", max_retries=0)
    with track_context(user_id="alice"):
        await client.chat.completions.create(**CHAT)
    assert redirector.received[0]["x-payi-user-id"] == "alice"
    assert attribution(genai.server.requests[-1]) == {}


def test_a_same_origin_request_keeps_them_and_uninstrument_removes_the_guard(
    genai: GenAI,
) -> None:
    from payi_otel import PayiInstrumentor, _destinations

    client = genai.openai_client()
    with track_context(user_id="alice"):
        client.chat.completions.create(**CHAT)
    assert genai.last() == {"x-payi-user-id": "alice"}
    hooks = client._client.event_hooks["request"]
    assert _destinations.strip_cross_origin in hooks
    PayiInstrumentor().uninstrument()
    assert _destinations.strip_cross_origin not in client._client.event_hooks["request"]
    genai.check_invariant = False


def test_the_policy_host_by_host() -> None:
    from payi_otel._model.wire_policy import WirePolicy
    from payi_otel._settings import policy_from

    default = WirePolicy()
    assert not default.sends_to("https://API.OpenAI.com./v1/chat/completions")
    assert not default.sends_to("https://bedrock-runtime.us-east-1.amazonaws.com/model/x")
    assert default.sends_to("http://127.0.0.1:8000/v1")
    assert default.sends_to("https://llm-gateway.corp.example/v1")
    assert default.sends_to(None)  # unknown: as an unknown host
    everything = policy_from(None, ["*"], {})
    assert everything.sends_to("https://api.anthropic.com/v1/messages")
    assert not policy_from(None, None, {"PAYI_HEADER_HOSTS": ""}).sends_to("http://127.0.0.1/")
    with pytest.raises(TypeError, match="header_hosts"):
        policy_from(None, "api.openai.com", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="PAYI_HEADER_HOSTS"):
        policy_from(None, None, {"PAYI_HEADER_HOSTS": "https://gateway/v1"})
