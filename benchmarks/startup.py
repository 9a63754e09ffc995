"""Start-up cost: ``python benchmarks/startup.py [--runs N] [--before SRC]``.

Each run is a fresh interpreter that imports ``payi_otel``, calls ``payi_instrument()`` (an
SDK ``TracerProvider`` and ``MeterProvider``, GenAI spans on), then imports ``openai`` (which
payi_otel instruments then: ``_on_import``) and makes one chat completion answered in-process
(``httpx2.MockTransport``). It reports the times of each step and from ``payi_instrument()``
to the first answer; whether ``genai_prices`` was imported by the end of
``payi_instrument()``, and how many installed SDKs, frameworks and HTTP clients it imported;
and the peak RSS. With ``--before SRC`` (a ``src`` directory of another checkout, e.g. from
``git archive``), the runs alternate between that code (through ``PYTHONPATH``) and this
one; the figure is the median of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import payi_otel
t1 = time.perf_counter()
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
t2 = time.perf_counter()
payi_otel.payi_instrument(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
t3 = time.perf_counter()
loaded = "genai_prices" in sys.modules
sdks = sum(name in sys.modules for name in ("openai", "anthropic", "botocore", "google.genai",
    "agents", "langchain_core", "httpx", "requests", "starlette", "flask"))
import httpx2, openai
t3b = time.perf_counter()
body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
client = openai.OpenAI(base_url="http://mock.invalid/v1", api_key="k", max_retries=0,
    http_client=httpx2.Client(transport=httpx2.MockTransport(
        lambda r: httpx2.Response(200, content=body,
                                  headers={"content-type": "application/json"}))))
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
t4 = time.perf_counter()
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
t5 = time.perf_counter()
print(json.dumps({"import payi_otel": t1 - t0, "payi_instrument()": t3 - t2,
    "import openai (instrumented then)": t3b - t3, "first call": t4 - t3b,
    "second call": t5 - t4, "payi_instrument() to the first answer": t4 - t2,
    "genai_prices after instrument": loaded, "SDKs, frameworks, HTTP clients it imported": sdks,
    "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_once(pythonpath: Optional[str]) -> Dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout
    result: Dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", help="a src directory of the code to compare with")
    args = parser.parse_args()
    sides = {"after": None} if not args.before else {"before": args.before, "after": None}
    results: Dict[str, List[Dict[str, float]]] = {side: [] for side in sides}
    for _ in range(args.runs):
        for side, path in sides.items():
            results[side].append(run_once(path))
    print("| | " + " | ".join(sides) + " |")
    print("|---|" + "---:|" * len(sides))
    for key in results["after"][0]:
        cells = []
        for side in sides:
            values = [r[key] for r in results[side]]
            if isinstance(values[0], (bool, int)):
                cells.append(str(values[0]))
            elif key.endswith("MB"):
                cells.append(f"{statistics.median(values):.1f}")
            else:
                cells.append(f"{statistics.median(values) * 1000:.1f} ms")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
