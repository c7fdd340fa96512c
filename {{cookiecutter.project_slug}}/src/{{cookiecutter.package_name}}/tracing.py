"""OpenTelemetry tracing of requests and database statements, on when OTEL_EXPORTER_OTLP_ENDPOINT
is set (it needs the `otel` extra). Off, nothing of OpenTelemetry is imported or installed.

The spans go by OTLP over HTTP to the endpoint; the SDK reads its other OTEL_* variables itself
(OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME = "{{ cookiecutter.project_slug }}"
# Probes and scrapes would be most of the spans and say nothing.
UNTRACED_URLS = "/health/live,/health/ready,/metrics"


def install_tracing(app: FastAPI) -> None:
    """Trace `app`'s requests, from the outermost middleware in (install it last)."""
    if not os.environ.get(ENDPOINT_VARIABLE):
        return
    # Imported here: without the variable, the service runs without OpenTelemetry installed.
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    # OTEL_SERVICE_NAME, when set, names the service instead.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    app.state.tracer_provider = provider
    # One span a request, without a span for each ASGI message it sends or receives.
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=UNTRACED_URLS,
        exclude_spans=["receive", "send"],
    )


def trace_engine(app: FastAPI, engine: AsyncEngine) -> None:
    """Trace each statement the engine runs, as a child of the request's span."""
    provider = getattr(app.state, "tracer_provider", None)
    if provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor  # noqa: PLC0415

    # The instrumentation declares SQLAlchemy < 2.1 and would otherwise refuse 2.1; its engine
    # events are the same in 2.1 (tests/test_tracing.py shows the statement spans).
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )


def shutdown_tracing(app: FastAPI) -> None:
    """Send the spans still buffered."""
    provider = getattr(app.state, "tracer_provider", None)
    if provider is not None:
        provider.shutdown()
