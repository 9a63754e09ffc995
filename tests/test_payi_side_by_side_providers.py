"""Side by side with Pay-i's own SDK (``payi``, real, unpatched) for the providers beyond
openai: AWS Bedrock (``boto3`` ``converse``) and Google GenAI (``generate_content``), in
ingest mode - the only mode Pay-i's SDK has for both without its own cloud proxy endpoints.
The same scoped calls, each SDK in a process of its own (tests/payi_side_by_side_providers.py),
against the fake LLM server and the fake Pay-i: each ``/api/v1/ingest`` request's ``xProxy-*``
headers and body, field by field. tests/test_payi_side_by_side.py does openai over every seed
scenario, in both modes; its normalisation (use case ids, limit order, properties) is used
here. The differences that remain are listed in ``KNOWN`` and asserted exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_llm_server import FakeLLMServer
from fake_payi_server import FakePayiServer
from test_payi_side_by_side import (
    MEASURED,
    PAYI_ONLY_FIELDS,
    PAYI_ONLY_HEADERS,
    _normal,
    start_runner,
)

TESTS = Path(__file__).resolve().parent
RUNNER = TESTS / "payi_side_by_side_providers.py"
PROVIDERS = ("bedrock", "google")

#: (provider, body field) -> why it differs; each asserted to differ exactly as written.
KNOWN: dict[tuple[str, str], tuple[object, object]] = {
    # Pay-i's SDK counts Gemini output only from candidatesTokensDetails (by modality) when
    # the response has promptTokensDetails; the Gemini API leaves candidatesTokensDetails out
    # for text replies, so its record has no output tokens. payi_otel ingests
    # candidatesTokenCount (the same count the GenAI span reports).
    ("google", "units"): ({"text": {"input": 1}}, {"text": {"input": 1, "output": 3}}),
}


Ingested = list[tuple[dict[str, str], dict[str, Any]]]


def _collected(labels: Any, llm: FakeLLMServer, payi: FakePayiServer) -> Ingested:
    assert labels == ["scoped", "properties"]
    assert len(llm.requests) == 2
    return [
        ({k: v for k, v in r.headers.items() if k.startswith("xproxy-")}, r.body)
        for r in payi.ingested()
    ]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[tuple[str, str], Ingested]]:
    """The four runs at once: Pay-i's SDK in a process per provider, payi_otel in one process
    forked per provider (each a Python process importing an SDK and Pay-i's)."""
    with ExitStack() as stack:
        started = [
            *(start_runner(RUNNER, "payi", (p,), stack, _collected) for p in PROVIDERS),
            start_runner(RUNNER, "payi_otel", PROVIDERS, stack, _collected),
        ]
        runs: dict[tuple[str, str], Ingested] = {}
        for finish in started:
            runs.update(finish())
        yield runs


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ingest_records_match_pay_i_sdk(
    runs: dict[tuple[str, str], Ingested], provider: str
) -> None:
    theirs_all, ours_all = runs["payi", provider], runs["payi_otel", provider]
    assert len(theirs_all) == len(ours_all) == 2
    their_ids: dict[str, str] = {}
    our_ids: dict[str, str] = {}
    differed: set[tuple[str, str]] = set()
    for (their_headers, theirs), (our_headers, ours) in zip(theirs_all, ours_all):
        assert set(their_headers) >= PAYI_ONLY_HEADERS
        their_headers = {k: v for k, v in their_headers.items() if k not in PAYI_ONLY_HEADERS}
        assert _normal(their_headers, their_ids) == _normal(our_headers, our_ids)
        properties = dict(theirs.get("properties") or {})
        properties.pop("system.stack_trace", None)
        theirs = {k: v for k, v in theirs.items() if k != "properties"}
        if properties:
            theirs["properties"] = properties
        payi_only = PAYI_ONLY_FIELDS
        assert set(theirs) - set(ours) == payi_only & set(theirs), provider
        assert set(ours) <= set(theirs), provider
        for field in sorted(set(theirs) - payi_only):
            a, b = theirs[field], ours[field]
            if field in MEASURED:
                assert type(a) is type(b), field
                continue
            if a != b:
                assert KNOWN.get((provider, field)) == (a, b), (provider, field, a, b)
                differed.add((provider, field))
    assert differed == {key for key in KNOWN if key[0] == provider}
