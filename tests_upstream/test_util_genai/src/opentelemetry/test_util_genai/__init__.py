"""payi_otel's stand-in for the unpublished ``opentelemetry-test-util-genai`` (see pyproject)."""
