"""WebSocket connections (README "Which headers go where"): an SDK's realtime connection is
not an attributed call, but what it sends is held to the policy - openai's
``client.realtime.connect`` sends the client's default headers on its opening handshake, and a
review found a client's own ``x-payi-*`` defaults sent to ``wss://api.openai.com``. A real
``websockets`` server on 127.0.0.1 records each handshake; the client's socket is connected to
it while the handshake names the host the SDK built."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any, Callable

import openai
import pytest
import websockets.sync.server as websockets_server

from payi_otel import PayiInstrumentor, track_context


class Recorder:
    def __init__(self) -> None:
        self.handshakes: list[dict[str, str]] = []
        self.server = websockets_server.serve(
            lambda connection: connection.close(), "127.0.0.1", 0, process_request=self._record
        )
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _record(self, connection: Any, request: Any) -> None:
        self.handshakes.append({k.lower(): v for k, v in request.headers.raw_items()})

    def sock(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    found = Recorder()
    yield found
    found.server.shutdown()


OWN = {"x-payi-user-id": "alice", "x-payi-account-name": "acme", "x-gateway-key": "k"}


def _connect(client: Any, recorder: Recorder) -> None:
    try:
        with client.realtime.connect(
            model="gpt-realtime", websocket_connection_options={"sock": recorder.sock()}
        ):
            pass
    except Exception:  # the server closes at once: what matters is the handshake it saw
        pass


@pytest.mark.parametrize(
    ("base", "refused"),
    # (ws://: the local server speaks no TLS; the host is what the policy decides on.)
    [("ws://api.openai.com/v1", True), ("ws://gateway.corp.example/v1", False)],
    ids=["api.openai.com", "gateway"],
)
def test_a_realtime_handshake_to_a_refused_host_carries_no_attribution(
    instrument: Callable[..., PayiInstrumentor], recorder: Recorder, base: Any, refused: bool
) -> None:
    instrument()
    client = openai.OpenAI(api_key="k", max_retries=0, default_headers=OWN, websocket_base_url=base)
    with track_context(user_id="bob"):
        _connect(client, recorder)
    [handshake] = recorder.handshakes
    assert handshake["host"] == ("api.openai.com" if refused else "gateway.corp.example")
    assert handshake["x-gateway-key"] == "k"  # the caller's other headers, as set
    payi = {k: v for k, v in handshake.items() if k.startswith("x-payi-")}
    assert payi == ({} if refused else {"x-payi-user-id": "alice", "x-payi-account-name": "acme"})


def test_an_async_realtime_handshake_is_held_to_the_policy_too(
    instrument: Callable[..., PayiInstrumentor], recorder: Recorder
) -> None:
    instrument()
    client = openai.AsyncOpenAI(
        api_key="k", max_retries=0, default_headers=OWN, websocket_base_url="ws://api.openai.com/v1"
    )

    async def connect() -> None:
        try:
            async with client.realtime.connect(
                model="gpt-realtime", websocket_connection_options={"sock": recorder.sock()}
            ):
                pass
        except Exception:
            pass

    asyncio.run(connect())
    [handshake] = recorder.handshakes
    assert handshake["host"] == "api.openai.com"
    assert not [k for k in handshake if k.startswith("x-payi-")]
