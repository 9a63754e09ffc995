"""The README's sections and fenced code blocks, for the checks that run them as written
(`make e2e`'s walk through "See it in Jaeger", the install matrix's getting-started case).
Standard library only."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def section(heading: str, text: str = "") -> str:
    """The section that starts with the line ``heading`` (``## Install``, ``### ...``), up to
    the next heading of the same or a higher level (``#`` lines inside fenced blocks are
    not headings)."""
    text = text or README.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    level = len(heading.split(" ", 1)[0])
    start = lines.index(heading + "\n")
    fenced = False
    for end in range(start + 1, len(lines)):
        if lines[end].startswith("```"):
            fenced = not fenced
        hashes = len(lines[end]) - len(lines[end].lstrip("#"))
        if not fenced and hashes and lines[end][hashes : hashes + 1] == " " and hashes <= level:
            return "".join(lines[start:end])
    return "".join(lines[start:])


def blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of ``language`` (``bash``, ``python``) in ``text``, in order."""
    return [m.group(2) for m in _FENCE.finditer(text) if m.group(1) == language]


def commands(block: str) -> list[str]:
    """A bash block's commands: one per line, ``\\`` continuations joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
