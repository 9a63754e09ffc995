"""The repository's own tooling files agree with each other: the pre-commit hooks run the ruff
that ``make lint`` runs, and the oldest supported SDKs are written in one place only."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev venv is 3.11
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
RUFF_HOOKS = "https://github.com/astral-sh/ruff-pre-commit"


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by lower-cased name."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def _pre_commit() -> dict[str, Any]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert isinstance(config, dict) and isinstance(config.get("repos"), list), config
    return config


def test_pre_commit_config_is_valid_and_every_hook_names_its_repo_rev_and_id() -> None:
    for repo in _pre_commit()["repos"]:
        assert isinstance(repo.get("repo"), str), repo
        if repo["repo"] != "local":
            assert isinstance(repo.get("rev"), str) and repo["rev"], repo
        assert repo.get("hooks"), repo
        for hook in repo["hooks"]:
            assert isinstance(hook.get("id"), str), hook
            if repo["repo"] == "local":
                assert {"name", "entry", "language"} <= set(hook), hook


def test_pre_commit_runs_the_ruff_pinned_in_requirements_dev() -> None:
    [ruff] = [r for r in _pre_commit()["repos"] if r["repo"] == RUFF_HOOKS]
    assert ruff["rev"] == "v" + _pins(ROOT / "requirements-dev.txt")["ruff"]
    assert {hook["id"] for hook in ruff["hooks"]} == {"ruff-check", "ruff-format"}


def test_the_oldest_supported_sdks_are_only_pyproject_extras_floors() -> None:
    """``make test-compat`` and the install matrix resolve them (uv, lowest-direct) from
    pyproject.toml's extras; nothing pins them by hand."""
    if tomllib is not None:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        assert extras["openai"][0].startswith("openai>=")
        assert extras["anthropic"][0].startswith("anthropic>=")
    hand_pin = re.compile(r"\b(openai|anthropic)==\d")
    for path in (ROOT / "Makefile", ROOT / "tests_install" / "test_install_matrix.py"):
        assert not hand_pin.search(path.read_text()), path
    assert "--resolution lowest-direct" in (ROOT / "Makefile").read_text()
