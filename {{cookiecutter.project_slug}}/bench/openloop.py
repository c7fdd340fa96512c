"""Open-loop load: requests start on a fixed schedule, whatever the answers do.

A closed loop (wrk, the sweep) sends the next request only when an answer came back, so a service
that falls behind slows its own load down and the queue it builds stays hidden. Here request i is
due at `start + i / rate`, and its latency counts from that moment: time spent waiting for a free
connection, in the service's accept backlog or in its event loop all counts.

The client is lean so that one core can offer several times what one worker serves: raw asyncio
streams, HTTP/1.1 keep-alive, a request encoded once, and a connection opened only when none is
free (at most `max_connections`). A request with no answer after `timeout` seconds is unanswered.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

STATUS_CLASSES = ("2xx", "503", "other", "unanswered")
"""How answers are counted: served, refused, anything else (errors, resets), no answer in time."""
CLIENT_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 2000

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class StatusFigures:
    count: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    rate: float
    """Requests offered per second."""
    seconds: float
    """How long requests were offered; goodput is per second of this."""
    statuses: dict[str, StatusFigures]
    """By status class, every one of `STATUS_CLASSES`."""
    connections: int
    """Connections the client opened."""
    late_p99_ms: float
    """How late the client itself sent requests (p99): above a few ms, it could not keep up and
    the latencies above include its own delay."""

    @property
    def offered(self) -> int:
        return sum(figures.count for figures in self.statuses.values())

    @property
    def goodput(self) -> float:
        """Requests answered 2xx per second."""
        return self.statuses["2xx"].count / self.seconds if self.seconds else 0.0

    @property
    def unanswered(self) -> int:
        return self.statuses["unanswered"].count


def run_open_loop(  # noqa: PLR0913 (the load's shape, passed on by name)
    url: str,
    rate: float,
    seconds: float,
    *,
    warmup: float = 0,
    timeout: float = CLIENT_TIMEOUT_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> OpenLoopResult:
    """Offer `GET url` at `rate` requests/s for `warmup` + `seconds`; count only the requests due
    after the warm-up; return once every request is answered or has waited `timeout`.

    The warm-up runs the same schedule on the same client, so the connections it opens are
    there when counting starts: a cold client opens hundreds at once, and the first requests
    then wait in the service's accept queue, which says more about the start than the load."""
    # The collector's full passes would walk everything this process imported (the benchmark's
    # charts bring matplotlib): tens of milliseconds in which no request is sent on time.
    gc.collect()
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            open_loop = _OpenLoop(url, timeout, max_connections)
            return runner.run(open_loop.run(rate, seconds, warmup))
    finally:
        gc.unfreeze()


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 (optional, as for uvicorn)
    except ImportError:
        return None
    return uvloop.new_event_loop


class _OpenLoop:
    def __init__(self, url: str, timeout: float, max_connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"needs an http:// URL with a host, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        self.request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode("ascii")
        self.timeout = timeout
        self.free = asyncio.Semaphore(max_connections)
        self.idle: list[Connection] = []
        self.opened = 0
        self.latencies: dict[str, list[float]] = {name: [] for name in STATUS_CLASSES}
        self.late: list[float] = []

    async def run(self, rate: float, seconds: float, warmup: float) -> OpenLoopResult:
        loop = asyncio.get_running_loop()
        uncounted = round(rate * warmup)
        total = uncounted + round(rate * seconds)
        requests: set[asyncio.Task[None]] = set()
        start = loop.time() + 0.01
        for number in range(total):
            due = start + number / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            request = asyncio.create_task(self.one(due, counted=number >= uncounted))
            requests.add(request)
            request.add_done_callback(requests.discard)
        if requests:
            await asyncio.wait(requests)
        for _, writer in self.idle:
            writer.close()
        return OpenLoopResult(
            rate=rate,
            seconds=seconds,
            statuses={name: _figures(values) for name, values in self.latencies.items()},
            connections=self.opened,
            late_p99_ms=_figures(self.late).p99_ms,
        )

    async def one(self, due: float, *, counted: bool) -> None:
        """One request; its latency and its outcome count from `due`, when it was scheduled."""
        loop = asyncio.get_running_loop()
        late = loop.time() - due
        outcome = "other"
        connection: Connection | None = None
        try:
            async with asyncio.timeout_at(due + self.timeout), self.free:
                if self.idle:
                    connection = self.idle.pop()
                    try:
                        status, keep_alive = await self.exchange(connection)
                    except (ConnectionError, asyncio.IncompleteReadError) as error:
                        if getattr(error, "partial", b""):
                            raise
                        # The server closed this idle connection (keep-alive timeout): as any
                        # HTTP client does, send the request again on a new one.
                        connection[1].close()
                        connection = await self.connect()
                        status, keep_alive = await self.exchange(connection)
                else:
                    connection = await self.connect()
                    status, keep_alive = await self.exchange(connection)
                outcome = "2xx" if 200 <= status < 300 else "503" if status == 503 else "other"  # noqa: PLR2004
                if keep_alive:
                    self.idle.append(connection)
                    connection = None
        except TimeoutError:
            outcome = "unanswered"
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError):
            outcome = "other"
        finally:
            if connection is not None:
                connection[1].close()
        if counted:
            self.late.append(late)
            self.latencies[outcome].append(loop.time() - due)

    async def exchange(self, connection: Connection) -> tuple[int, bool]:
        reader, writer = connection
        writer.write(self.request)
        return await _read_response(reader)

    async def connect(self) -> Connection:
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole response; return its status and whether the connection can be reused."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    keep_alive = b"\r\nconnection: close" not in head
    length = _header(head, b"content-length")
    if length is not None:
        await reader.readexactly(int(length))
    elif _header(head, b"transfer-encoding") == b"chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        keep_alive = False
    return status, keep_alive


def _header(head: bytes, name: bytes) -> bytes | None:
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    return head[start : head.index(b"\r\n", start)].strip()


def _figures(latencies: list[float]) -> StatusFigures:
    if not latencies:
        return StatusFigures(0, 0.0, 0.0)
    if len(latencies) == 1:
        return StatusFigures(1, latencies[0] * 1000, latencies[0] * 1000)
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return StatusFigures(len(latencies), percentiles[49] * 1000, percentiles[98] * 1000)
