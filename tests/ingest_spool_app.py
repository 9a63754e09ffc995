"""An app with per-call ingest and a spool file, for tests/test_ingest_spool.py (a process
of its own, to be killed with SIGKILL)::

    python ingest_spool_app.py crash LLM_BASE_URL PAYI_BASE_URL SPOOL N_BEFORE N_AFTER
    python ingest_spool_app.py resume LLM_BASE_URL PAYI_BASE_URL SPOOL [no-key]

``crash``: N_BEFORE calls, flushed to Pay-i; prints ``flushed``; waits for a line on stdin
(the test takes Pay-i down); N_AFTER calls; prints ``ready`` and the stats, then waits to be
killed. ``resume``: no call; waits until the spool's records are settled, prints the stats
and exits (``no-key``: with no Pay-i API key).
"""

from __future__ import annotations

import json
import sys
import time


def main(mode: str, llm: str, payi_url: str, spool: str, *counts: str) -> None:
    import openai
    from opentelemetry.sdk.trace import TracerProvider

    from payi_otel import PayiIngestExporter, payi_instrument

    exporter = PayiIngestExporter(
        api_key=None if counts == ("no-key",) else "test-key",
        base_url=payi_url,
        spool=spool,
        timeout=0.5,
        backoff=0.05,
        max_backoff=0.2,
    )
    payi_instrument(tracer_provider=TracerProvider(), header_hosts=[], ingest=exporter)
    if mode == "resume":
        exporter.force_flush(20_000)
        print(json.dumps(dict(exporter.stats())), flush=True)
        exporter.shutdown()
        return
    client = openai.OpenAI(base_url=llm, api_key="test", max_retries=0)
    before, after = int(counts[0]), int(counts[1])
    for _ in range(before):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "a"}])
    exporter.force_flush(20_000)
    print("flushed", flush=True)
    sys.stdin.readline()
    for _ in range(after):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "b"}])
    print("ready " + json.dumps(dict(exporter.stats())), flush=True)
    time.sleep(120)  # killed here


if __name__ == "__main__":
    main(*sys.argv[1:])
