"""A TCP proxy in front of PostgreSQL that can lose its connections without telling the client.

After `sever()`, each connection open through the proxy loses its server side, while its client
side stays open and silent: the client learns only when it next sends something, and then gets a
reset. That is how a failover, a load balancer or a NAT timeout looks to a pool, and it is what a
check for closed sockets cannot see, since nothing arrives until the connection is used.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Self

from sqlalchemy.engine import URL


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    severed: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class SeveringProxy:
    """`async with SeveringProxy(url) as proxy:` serves on `proxy.url` until the block ends."""

    def __init__(self, server: URL) -> None:
        self.server = server
        self._links: set[_Link] = set()
        self._listener: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> URL:
        return self.server.set(host="127.0.0.1", port=self.port)

    async def __aenter__(self) -> Self:
        self._listener = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for link in list(self._links):
            link.client.transport.abort()
            link.server.transport.abort()
            for pump in link.pumps:
                pump.cancel()
        await self._listener.wait_closed()

    def sever(self) -> int:
        """Drop the server side of every open connection; return how many there were."""
        live = [link for link in self._links if not link.severed]
        for link in live:
            link.severed = True
            link.server.transport.abort()
        return len(live)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(
            self.server.host or "127.0.0.1", self.server.port or 5432
        )
        link = _Link(client=writer, server=server_writer)
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._to_server(link, reader)),
            asyncio.create_task(self._to_client(link, server_reader)),
        ]
        try:
            await asyncio.gather(*link.pumps, return_exceptions=True)
        finally:
            self._links.discard(link)

    @staticmethod
    async def _to_server(link: _Link, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if link.severed:
                    break
                link.server.write(data)
                await link.server.drain()
        # The client learns of a severed connection only now, from a reset.
        link.client.transport.abort()
        link.server.transport.abort()

    @staticmethod
    async def _to_client(link: _Link, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                link.client.write(data)
                await link.client.drain()
        if not link.severed:
            link.client.transport.abort()
