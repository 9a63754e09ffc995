"""The business logic of the demo: a small customer-support assistant.

A ticket goes through three steps, each an ``@track(use_case_step=...)`` function, inside a
``track_context`` naming the customer (user and account)::

    classify  -> one chat completion picks a category
    retrieve  -> one embeddings call ranks the knowledge-base articles
    answer    -> one chat completion (streamed for some tickets) drafts the reply

Two tickets take a step on another provider, through the company's LLM gateway (the fake
server here): a reply in German is translated by Gemini (``google-genai``), and an escalated
draft gets a compliance review by Claude on AWS Bedrock (``boto3``, ``converse``). Same scopes,
same attribution: nothing provider-specific but the client.

Around that: an escalation whose call is billed to the human agent by per-call headers, an
admin replay that clears every limit, and an asyncio fan-out writing one digest per account.
Nothing here knows about Pay-i beyond ``track`` / ``track_context`` and one ``extra_headers``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam
from opentelemetry import trace

from payi_otel import track, track_context

__all__ = [
    "DIGEST_ACCOUNTS",
    "TICKETS",
    "Clouds",
    "Ticket",
    "admin_replay",
    "handle_ticket",
    "nightly_digest",
]

CHAT_MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
GEMINI_MODEL = "gemini-2.5-flash"
#: A cross-region inference profile, as Bedrock users call Claude (priced by genai-prices).
BEDROCK_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"

#: Knowledge-base articles by category; ``retrieve`` ranks them by embedding similarity.
KNOWLEDGE_BASE: dict[str, tuple[str, ...]] = {
    "billing": (
        "Invoices are issued on the 1st of each month.",
        "Duplicate charges are refunded within 5-7 business days.",
    ),
    "login": (
        "Passwords can be reset from the sign-in page.",
        "With SSO enabled, sign-in goes through your identity provider.",
    ),
    "outage": (
        "Live incident updates are posted on the status page.",
        "During an incident, retry 503 responses with exponential backoff.",
    ),
    "general": ("Our support team answers within one business day.",),
}
CATEGORIES = tuple(KNOWLEDGE_BASE)

_tracer = trace.get_tracer("support_assistant")


@dataclass(frozen=True)
class Ticket:
    """A customer's question, and how the assistant should handle it."""

    id: str
    user_id: str
    account_name: str
    question: str
    stream: bool = False
    """Stream the answer (as a chat UI would)."""
    escalate_to: str = ""
    """A human agent who reviews the draft; that call is billed to the agent."""
    translate_to: str = ""
    """Translate the reply into this language (Gemini)."""
    review: bool = False
    """A compliance review of the draft before it goes out (Claude on Bedrock)."""


@dataclass(frozen=True)
class Clouds:
    """The other providers' clients (``None``: that step is skipped, as when the demo runs
    against a real OpenAI endpoint and has no gateway for them)."""

    gemini: Optional[Any] = None
    """A ``google.genai.Client``."""
    bedrock: Optional[Any] = None
    """A ``boto3`` ``bedrock-runtime`` client."""


TICKETS: tuple[Ticket, ...] = (
    Ticket(
        "T-1001",
        "alice",
        "acme",
        "I was charged twice on my billing statement; can I get a refund?",
    ),
    Ticket(
        "T-1002",
        "bob",
        "globex",
        "I cannot login since SSO was enabled for our team.",
        stream=True,
        translate_to="German",
    ),
    Ticket(
        "T-1003",
        "carol",
        "initech",
        "Is there an outage? The API has returned 503 for an hour.",
        escalate_to="agent-7",
        review=True,
    ),
)
DIGEST_ACCOUNTS: tuple[str, ...] = ("acme", "globex", "initech")


def _prompt(question: str, system: str = "") -> list[ChatCompletionMessageParam]:
    """Chat messages: an optional system prompt, then the user's question."""
    messages: list[ChatCompletionMessageParam] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": question})
    return messages


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm else 0.0


@track(use_case_step="classify")
def classify(client: OpenAI, question: str) -> str:
    """One of :data:`CATEGORIES`: the first category the model's reply names.

    (The fake server echoes the prompt, so there the question's own words decide.)
    """
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        max_tokens=5,
        messages=_prompt(question, system="Answer with one word: " + ", ".join(CATEGORIES)),
    )
    text = (reply.choices[0].message.content or "").lower()
    return next((c for c in CATEGORIES if c in text), "general")


@track(use_case_step="retrieve")
def retrieve(client: OpenAI, question: str, category: str, k: int = 2) -> list[str]:
    """The ``k`` articles of ``category`` (and general ones) closest to ``question``."""
    articles = [*KNOWLEDGE_BASE[category], *KNOWLEDGE_BASE["general"]]
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=[question, *articles])
    query, *vectors = (item.embedding for item in result.data)
    ranked = sorted(zip(articles, vectors), key=lambda pair: -_cosine(query, pair[1]))
    return [article for article, _ in ranked[:k]]


@track(use_case_step="answer", limit_ids=["answer_tokens"])
def answer(client: OpenAI, question: str, articles: Sequence[str], *, stream: bool = False) -> str:
    """The drafted reply, from the question and the retrieved articles."""
    messages = _prompt(question, system="Answer using these articles:\n" + "\n".join(articles))
    if not stream:
        reply = client.chat.completions.create(model=CHAT_MODEL, messages=messages)
        return reply.choices[0].message.content or ""
    chunks = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


@track(use_case_step="escalate")
def escalate(client: OpenAI, draft: str, agent_id: str) -> str:
    """A human agent polishes the draft with the assistant's help.

    Per-call headers beat every scope: this one call is attributed to the agent and tagged,
    while the rest of the ticket stays on the customer.
    """
    reply = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=_prompt("Make this reply more empathetic: " + draft),
        extra_headers={"x-payi-user-id": agent_id, "x-payi-request-tags": "escalation"},
    )
    return reply.choices[0].message.content or ""


@track(use_case_step="translate")
def translate(gemini: Any, text: str, language: str) -> str:
    """The reply in the customer's language: one Gemini ``generate_content`` call."""
    reply = gemini.models.generate_content(
        model=GEMINI_MODEL, contents=f"Translate into {language}: {text}"
    )
    return str(reply.text or "")


@track(use_case_step="review")
def review(bedrock: Any, draft: str) -> str:
    """A compliance review of the draft: one Bedrock ``converse`` call (Claude)."""
    reply = bedrock.converse(
        modelId=BEDROCK_MODEL,
        system=[{"text": "Flag promises we cannot keep."}],
        messages=[{"role": "user", "content": [{"text": draft}]}],
    )
    return str(reply["output"]["message"]["content"][0]["text"])


def handle_ticket(client: OpenAI, ticket: Ticket, clouds: Optional[Clouds] = None) -> str:
    """classify -> retrieve -> answer (-> translate, review, escalate) for one customer's
    ticket.

    The ticket span stands for whatever the app already traces (an HTTP request, a queue
    message); ``track_context`` names who the calls inside are for.
    """
    with (
        _tracer.start_as_current_span(f"ticket {ticket.id}"),
        track_context(
            user_id=ticket.user_id,
            account_name=ticket.account_name,
            limit_ids=[f"{ticket.account_name}_quota"],
        ),
    ):
        category = classify(client, ticket.question)
        articles = retrieve(client, ticket.question, category)
        draft = answer(client, ticket.question, articles, stream=ticket.stream)
        clouds = clouds or Clouds()
        if ticket.translate_to and clouds.gemini is not None:
            draft = translate(clouds.gemini, draft, ticket.translate_to)
        if ticket.review and clouds.bedrock is not None:
            review(clouds.bedrock, draft)
        if ticket.escalate_to:
            draft = escalate(client, draft, ticket.escalate_to)
        return draft


def admin_replay(client: OpenAI, ticket: Ticket) -> str:
    """An operator re-runs a ticket's answer for QA: internal, and against no limit at all.

    ``limit_ids=[]`` clears the list, the global and the ``answer`` step's limits included.
    """
    with (
        _tracer.start_as_current_span(f"admin replay {ticket.id}"),
        track_context(user_id="ops-admin", account_name="internal", limit_ids=[]),
    ):
        return answer(client, ticket.question, KNOWLEDGE_BASE["general"])


@track(use_case_step="digest")
async def summarize_account(client: AsyncOpenAI, account_name: str) -> str:
    """One account's daily digest (runs concurrently with the others)."""
    reply = await client.chat.completions.create(
        model=CHAT_MODEL, messages=_prompt(f"Summarize today's tickets for {account_name}.")
    )
    return reply.choices[0].message.content or ""


async def nightly_digest(base_url: str, accounts: Sequence[str]) -> list[str]:
    """All digests at once: ``asyncio.gather``, each task in its own ``track_context``.

    Each task sees only its own scope, so every concurrent call carries its own account.
    """

    async def one(client: AsyncOpenAI, account_name: str) -> str:
        async with track_context(account_name=account_name, request_tags=["digest"]):
            return await summarize_account(client, account_name)

    client = AsyncOpenAI(base_url=base_url, api_key="demo")
    try:
        with _tracer.start_as_current_span("nightly digest"):
            return list(await asyncio.gather(*(one(client, a) for a in accounts)))
    finally:
        await client.close()
