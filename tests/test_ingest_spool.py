"""Issue 19, the spool: a crash-safe append-only JSONL file of unsent ingest records, replayed
once on the next start - a ``kill -9`` of a real process with records unsent, then a restart:
each replayed once, never twice; bounded; one owner at a time."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_llm_server import FakeLLMServer
from fake_payi_server import FakePayiServer
from fixtures_genai import CHAT, GenAI
from ingest_support import exporter_for, fake_payi_module, payi

from payi_otel._spool import Spool

__all__ = ["fake_payi_module", "payi"]  # fixtures

TESTS = Path(__file__).resolve().parent
APP = TESTS / "ingest_spool_app.py"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAYI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent / "examples")])
    return env


def _resume(llm: FakeLLMServer, payi: FakePayiServer, spool: Path, *key: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, str(APP), "resume", llm.openai_base_url, payi.base_url, str(spool), *key],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return stats


def _crash(llm_server: FakeLLMServer, payi: FakePayiServer, spool: Path) -> None:
    """An app that sent 3 records, then made 7 calls while Pay-i was down, killed -9."""
    command = [sys.executable, str(APP), "crash", llm_server.openai_base_url, payi.base_url]
    with subprocess.Popen(
        [*command, str(spool), "3", "7"],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as app:
        try:
            assert app.stdout is not None and app.stdin is not None
            assert app.stdout.readline().strip() == "flushed"
            payi.down()  # Pay-i goes away: the next 7 records stay unsent
            app.stdin.write("go\n")
            app.stdin.flush()
            line = app.stdout.readline()
            assert line.startswith("ready "), line + (app.stderr.read() if app.stderr else "")
            before = json.loads(line[len("ready ") :])
            assert before["exported"] == 3 and before["pending"] == 7
            os.kill(app.pid, signal.SIGKILL)  # kill -9: no atexit, no flush
            app.wait(10)
        finally:
            if app.poll() is None:
                app.kill()
                app.wait(10)
            payi.up()
    assert app.returncode == -signal.SIGKILL


def test_kill_9_then_restart_replays_each_unsent_record_once(
    llm_server: FakeLLMServer, payi: FakePayiServer, tmp_path: Path
) -> None:
    spool = tmp_path / "ingest.jsonl"
    _crash(llm_server, payi, spool)
    with spool.open("a") as file:
        file.write('{"add": "torn-by-a-cr')  # a line a crash cut short: skipped

    first_ids = [r.id for r in payi.ingested()]
    assert len(first_ids) == 3

    stats = _resume(llm_server, payi, spool)
    assert stats["replayed"] == 7 and stats["exported"] == 7, stats
    sent = Counter(r.id for r in payi.ingested())
    assert len(sent) == 10 and set(sent.values()) == {1}  # each record once, none twice
    bodies = [r.body for r in payi.ingested()]
    assert all(b["category"] == "system.openai" and b["resource"] == "gpt-4" for b in bodies)

    again = _resume(llm_server, payi, spool)  # a third start: nothing left to send
    assert again["replayed"] == 0 and again["exported"] == 0
    assert len(payi.ingested()) == 10
    # The file was compacted at each start: only what was unsettled then.
    lines = [json.loads(x) for x in spool.read_text().splitlines()]
    assert not [
        x for x in lines if "add" in x and not any(d.get("done") == x["add"] for d in lines)
    ]


def test_a_start_that_cannot_send_keeps_the_spooled_records(
    llm_server: FakeLLMServer, payi: FakePayiServer, tmp_path: Path
) -> None:
    """A start without an API key (a secret not mounted yet), then one whose key Pay-i
    refuses (401): neither can send, so the spool keeps what it holds (a review found the
    records failed and marked done: never billed); the next start that can sends each once."""
    spool = tmp_path / "ingest.jsonl"
    _crash(llm_server, payi, spool)
    assert len(payi.ingested()) == 3
    no_key = _resume(llm_server, payi, spool, "no-key")
    assert no_key["replayed"] == 7 and no_key["spooled"] == 7 and no_key["failed"] == 0
    payi.status = 401
    refused = _resume(llm_server, payi, spool)
    assert refused["replayed"] == 7 and refused["spooled"] == 7 and refused["failed"] == 0
    payi.status = 200
    good = _resume(llm_server, payi, spool)
    assert good["replayed"] == 7 and good["exported"] == 7
    assert len(payi.accepted_ids()) == 10


def test_the_spool_is_bounded_and_has_one_owner(
    genai: GenAI, payi: FakePayiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "ingest.jsonl"
    payi.down()
    try:
        exporter = exporter_for(
            payi.base_url, spool=str(spool), spool_max_bytes=1500, timeout=0.2, retry_for=60
        )
        genai.reinstrument(ingest=exporter)
        with caplog.at_level(logging.WARNING, logger="payi_otel"):
            for _ in range(6):
                genai.openai.chat.completions.create(**CHAT)
            other = Spool(str(spool))
            assert other.open() is None  # owned by the exporter
        assert "is full" in caplog.text and "cannot use the ingest spool" in caplog.text
        assert spool.stat().st_size <= 1500
        spooled = sum(1 for line in spool.read_text().splitlines() if '"add"' in line)
        assert 0 < spooled < 6
        exporter.shutdown()  # Pay-i still down: the spooled ones kept, the rest dropped
        worker = exporter._queue._worker
        assert worker is not None
        worker.join(10)  # a send in flight at shutdown lets the spool go when it ends
        stats: Any = exporter.stats()
        assert stats["spooled"] == spooled and stats["dropped"] == 6 - spooled
    finally:
        payi.up()
    resumed = exporter_for(payi.base_url, spool=str(spool))
    assert resumed.force_flush(10_000)
    assert resumed.stats()["replayed"] == spooled and resumed.stats()["exported"] == spooled
    resumed.shutdown()
    assert len({r.id for r in payi.ingested()}) == spooled


def test_the_spool_is_rewritten_when_it_fills_with_settled_records(tmp_path: Path) -> None:
    """A long run fills the file with settled records' lines: it is rewritten with the
    unsettled ones alone when the next line would not fit, so it keeps spooling (a review: it
    stopped for good after ~200k calls at the default bound, and a crash then lost what was
    unsent); a record that does not fit even then is refused."""
    path = tmp_path / "ingest.jsonl"
    spool = Spool(str(path), max_bytes=2_000)
    assert spool.open() == []
    record = {"units": {"text": {"input": 1, "output": 2}}, "resource": "gpt-4o-mini"}
    for n in range(200):  # ~90 bytes a record, ~15 a done: many times the bound
        assert spool.add(f"id-{n}", record)
        if n >= 3:
            spool.done(f"id-{n - 3}")  # three in flight at a time
    assert path.stat().st_size <= 2_000
    assert not spool.add("big", {"prompt": "x" * 1_900})  # does not fit even rewritten
    assert path.stat().st_size <= 2_000
    spool.close()
    again = Spool(str(path))
    assert [i for i, _ in again.open() or []] == ["id-197", "id-198", "id-199"]
    again.close()


def test_a_reload_while_a_send_hangs_hands_the_spool_over(
    genai: GenAI, payi: FakePayiServer, tmp_path: Path
) -> None:
    """``uninstrument()`` then a new exporter on the same spool (a configuration reload)
    while Pay-i is slow: the old exporter's send outlives its shutdown; it kept the spool's
    lock, so the new exporter ran with no spool at all (a review). The lock is let go at
    shutdown: the new exporter owns the spool, replays the record in flight (Pay-i knows it
    by its id) and spools its own."""
    spool = tmp_path / "ingest.jsonl"
    payi.fault = "hang"
    old = exporter_for(payi.base_url, spool=str(spool), timeout=2.0, shutdown_timeout=0.2)
    genai.reinstrument(ingest=old)
    genai.openai.chat.completions.create(**CHAT)
    deadline = time.monotonic() + 5
    while not payi.ingested():  # the send is in flight, hanging
        assert time.monotonic() < deadline
        time.sleep(0.01)
    genai.reinstrument()  # the reload: shuts the old exporter down, the send still hangs
    assert old.stats()["spooled"] == 1
    payi.fault = None
    new = exporter_for(payi.base_url, spool=str(spool))
    genai.reinstrument(ingest=new)
    assert new._queue.spooling
    genai.openai.chat.completions.create(**CHAT)
    assert new.force_flush(10_000)
    assert new.stats()["replayed"] == 1 and new.stats()["exported"] == 2
    assert len(payi.accepted_ids()) == 2
    new.shutdown()
