# Demo image: payi_otel + the support-assistant example, exporting over OTLP/HTTP.
# The example starts its own fake LLM server in-process, so no API keys or network are
# needed. Used by docker-compose.yml (service "demo").
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY src/ src/
COPY examples/ examples/

# Exactly what a user installs: pip's own resolution, no dev pins. tests_install runs this
# line (and the demo after it) in a fresh venv, so the image's demo is known to work. The demo
# calls Gemini and Bedrock too; google-genai below 3, the range its OpenTelemetry
# instrumentation declares (3.x works, with one WARNING: README "Providers").
RUN pip install . openai anthropic boto3 "google-genai<3" opentelemetry-exporter-otlp-proto-http

# Don't run the demo as root.
RUN useradd --create-home --uid 10001 demo
USER demo

CMD ["python", "examples/support_assistant/main.py"]
