"""Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; on, a request is a server span with
a child span per database statement."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import PROJECT_ROOT, free_port, service_environment


async def test_request_is_a_server_span_with_a_child_span_per_statement(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: the OTLP exporter fails fast at shutdown; the test reads the spans
    # from an in-memory exporter beside it.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    app = create_app(settings)
    spans = InMemorySpanExporter()
    app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))

    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            created = await client.post("/items", json={"name": "traced"})
            spans.clear()
            response = await client.get(f"/items/{created.json()['id']}")

    finished = spans.get_finished_spans()
    [server] = [span for span in finished if span.kind == SpanKind.SERVER]
    # The pool may also open a connection (a "connect" span): statements carry their SQL.
    statements = [
        span for span in finished if span.attributes and "db.statement" in span.attributes
    ]
    print(f"\nspans of one request: {[(span.name, span.kind.name) for span in finished]}")

    assert response.status_code == 200
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/items/{item_id}"
    [statement] = statements
    assert statement.kind == SpanKind.CLIENT
    assert statement.parent is not None
    assert server.context is not None
    assert statement.parent.span_id == server.context.span_id
    assert statement.parent.trace_id == server.context.trace_id
    assert "FROM items" in str(statement.attributes and statement.attributes["db.statement"])


def test_without_the_endpoint_nothing_of_opentelemetry_is_imported(migrated_database: str) -> None:
    """In a fresh interpreter: create the application, serve a request, list the modules.

    FastAPI itself imports the OpenTelemetry API (its own telemetry, a no-op without a tracer
    provider): the service must add no module to those, and install no provider.
    """
    script = textwrap.dedent(
        """
        import asyncio, sys
        import fastapi

        def opentelemetry():
            return {name for name in sys.modules if name.split(".")[0] == "opentelemetry"}

        fastapis = opentelemetry()
        from asgi_lifespan import LifespanManager
        from httpx import ASGITransport, AsyncClient
        from {{ cookiecutter.package_name }}.app import create_app

        async def main():
            app = create_app()
            async with LifespanManager(app):
                transport = ASGITransport(app=app)
                async with AsyncClient(transport=transport, base_url="http://test") as client:
                    assert (await client.get("/items")).status_code == 200
            from opentelemetry import trace
            print(type(trace.get_tracer_provider()).__name__, sorted(opentelemetry() - fastapis))

        asyncio.run(main())
        """
    )
    environment = service_environment(DATABASE_URL=migrated_database)
    environment.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)

    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ProxyTracerProvider []"
