"""The README and docs/ link to each other (issue 22 moved the reference sections to docs/):
every relative link names a file that exists and, with a ``#fragment``, a heading there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            text = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text(encoding="utf-8"))
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in links(doc):
        name, _, fragment = target.partition("#")
        linked = (doc.parent / name).resolve() if name else doc
        headings = anchors(linked) if linked.suffix == ".md" and linked.exists() else None
        if not linked.exists() or (fragment and headings is not None and fragment not in headings):
            broken.append(target)
    assert not broken, f"{doc.name}: {broken}"


def test_the_readme_leads_with_what_a_newcomer_needs() -> None:
    """What it is, try it, install, quick start, Jaeger - before the reference material."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"(?m)^## (.+)$", text)
    assert headings[:4] == [
        "Try it: `make demo`",
        "Install",
        "Quick start",
        "See it in Jaeger",
    ], headings
    top = text[: text.index("\n## ")]
    assert "api.openai.com" in top and "not published on PyPI" in top.replace("**", "").replace(
        "Not", "not"
    )
