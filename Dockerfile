# Demo image: payi_otel + the support-assistant example, exporting over OTLP/HTTP.
# The example starts its own fake LLM server in-process, so no API keys or network are
# needed. Used by docker-compose.yml (service "demo").
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# requirements-dev.txt is the repo's pinned tool chain. Used only as a constraints file (-c),
# it pins the versions of what is installed here without installing the dev tools.
COPY requirements-dev.txt ./
COPY pyproject.toml README.md ./
COPY src/ src/
COPY examples/ examples/

RUN pip install -c requirements-dev.txt . openai anthropic opentelemetry-exporter-otlp-proto-http

# Don't run the demo as root.
RUN useradd --create-home --uid 10001 demo
USER demo

CMD ["python", "examples/support_assistant/main.py"]
