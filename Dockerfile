# Demo image: payi_otel + the support-assistant example, exporting over OTLP/HTTP.
# The example starts its own fake LLM server in-process, so no API keys or network are
# needed. Used by docker-compose.yml (service "demo").
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md constraints-docker.txt ./
COPY src/ src/
COPY examples/ examples/

# What a user installs, pinned: every package beside payi-otel at the version of
# constraints-docker.txt, so a rebuild installs the same set. tests_install runs this line (and
# the demo after it) in a fresh venv, and checks that the constraints pin everything it installs.
# The demo calls Gemini and Bedrock too; google-genai below 3, the range its OpenTelemetry
# instrumentation declares (3.x works, with one WARNING: README "Providers").
RUN pip install -c constraints-docker.txt \
    . openai anthropic boto3 "google-genai<3" opentelemetry-exporter-otlp-proto-http

# Don't run the demo as root.
RUN useradd --create-home --uid 10001 demo
USER demo

CMD ["python", "examples/support_assistant/main.py"]
