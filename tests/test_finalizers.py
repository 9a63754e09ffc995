"""Finalizers never change the context they interrupt.

The garbage collector runs ``__del__`` and ``weakref.finalize`` callbacks wherever it is
triggered - also inside an allocation of the program's own ``ContextVar.set`` (every
``context.attach``). A finalizer that sets the same ``contextvars.Context`` there frees the
mapping that set is still reading, and CPython crashes (a segfault this suite hit once, in an
abandoned GenAI stream's ``__del__``). payi_otel's own finalizer callbacks (``weakref.finalize``
carries its creator's context) and util-genai's stream wrappers' ``__del__`` therefore run in a
copy of the current Context: what they set never lands in the interrupted one.
"""

from __future__ import annotations

import contextvars
import gc
import weakref
from typing import Any

from fixtures_genai import GenAI

from payi_otel import _stream_context, track_context

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("payi_test_mark", default="")


class _Owner:
    pass


def test_a_finalize_callback_runs_in_its_creators_scope_and_sets_nothing_outside(
    genai: GenAI,
) -> None:
    seen: list[object] = []

    def callback() -> None:
        from payi_otel import get_context

        seen.append(get_context().get("user_id"))
        MARK.set("set by the finalizer")

    with track_context(user_id="creator"):
        owner = _Owner()
        weakref.finalize(owner, callback)
    with track_context(user_id="other"):
        del owner  # finalized here, by reference counting
        assert seen == ["creator"]  # the creator's scope, as before
        assert MARK.get() == ""  # and nothing it set is left in the interrupted context


def test_util_genai_stream_finalizers_run_in_a_copy_and_are_restored(genai: GenAI) -> None:
    from opentelemetry.util.genai import stream

    patched = [
        cls
        for cls in vars(stream).values()
        if isinstance(cls, type) and cls.__module__ == stream.__name__ and "__del__" in cls.__dict__
    ]
    assert patched  # util-genai's _StreamTelemetry and the tool stream wrappers
    for cls in patched:
        assert getattr(cls.__dict__["__del__"], "__wrapped__", None) is not None, cls


def test_a_del_run_in_a_copy_sets_nothing_in_the_context_it_interrupted() -> None:
    class Toy:
        def __del__(self) -> None:
            MARK.set("set by __del__")

    undo = _stream_context._finalizing_in_a_copy(Toy)
    try:
        toy: Any = Toy()
        del toy
        gc.collect()
        assert MARK.get() == ""
    finally:
        undo()
    assert "__wrapped__" not in vars(Toy.__dict__["__del__"])
    toy = Toy()
    del toy  # the original again: it sets the caller's context
    assert MARK.get() == "set by __del__"
    MARK.set("")
