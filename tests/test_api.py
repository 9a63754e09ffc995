"""The public surface: exactly what ``payi_otel.__all__`` names, everything else private, and
the typed keyword arguments of ``track`` / ``track_context`` equal to the parameter registry."""

from __future__ import annotations

import pkgutil
import typing

import payi_otel
from payi_otel._model.parameters import REGISTRY, Kind, ScopeParameters

PUBLIC = {
    "ParameterError",
    "ParameterTypeError",
    "ParameterValueError",
    "PayiIngestExporter",
    "PayiInstrumentor",
    "__version__",
    "get_context",
    "last_result",  # issue 19: Pay-i's last answer
    "payi_instrument",
    "track",
    "track_context",
}


def test_all_is_the_public_api_and_every_name_exists() -> None:
    assert set(payi_otel.__all__) == PUBLIC
    for name in payi_otel.__all__:
        assert getattr(payi_otel, name) is not None


def test_every_module_but_version_is_private() -> None:
    modules = {m.name for m in pkgutil.iter_modules(payi_otel.__path__)}
    # issue 21: `web`, the public middleware module (payi_otel.web.PayiASGIMiddleware, ...).
    assert {m for m in modules if not m.startswith("_")} == {"version", "web"}


_KIND_TYPES = {
    Kind.STRING: str,
    Kind.INT: int,
    Kind.BOOL: bool,
    Kind.LIST: typing.Sequence,
    Kind.DICT: typing.Mapping,
}


def test_typed_keyword_arguments_match_the_registry() -> None:
    hints = typing.get_type_hints(ScopeParameters)
    assert list(hints) == [p.name for p in REGISTRY]
    for parameter in REGISTRY:
        [inner, none] = typing.get_args(hints[parameter.name])  # Optional[X]
        assert none is type(None)
        origin = typing.get_origin(inner) or inner
        expected = _KIND_TYPES[parameter.kind]
        assert origin is expected or getattr(expected, "__origin__", None) is origin, (
            parameter.name,
            inner,
        )


def test_the_parameter_table_in_docs_is_the_registry() -> None:
    """docs/parameters.md states the names in the project's words; the registry is the code's
    single source: the two must agree row for row."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "parameters.md").read_text()
    rows = re.findall(
        r"^\| `(\w+)` \| [^|]*(?:\\\|[^|]*)*\| `([\w-]+)`[^|]*\| `([\w.]+)", text, flags=re.M
    )
    got = [(name, header, attribute.rstrip(".")) for name, header, attribute in rows]
    assert got == [(p.name, p.header, p.attribute) for p in REGISTRY]


def test_the_payi_names_table_in_docs_is_the_registry() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "parameters.md").read_text()
    section = text[text.index("## Pay-i's names") : text.index("## Wire format")]
    rows = re.findall(r"^\| `(\w+)` \| (?:`([\w-]+)`|- \(not sent\))", section, flags=re.M)
    assert [(name, payi or None) for name, payi in rows] == [
        (p.name, p.payi_header) for p in REGISTRY
    ]
