"""The benchmark's open-loop generator: it keeps its schedule, reads every kind of answer, counts
each request once by status class, and reports against the real service."""

from __future__ import annotations

import itertools
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from bench.openloop import STATUS_CLASSES, OpenLoopResult, StatusFigures, run_open_loop
from bench.overload import OpenLoopPoint, Rate, median_point, open_loop_table, rates

from .conftest import running_server

# What the scripted server answers, in turn: three kinds of 2xx, a 503, a 500, and no answer.
ANSWERS: list[bytes | None] = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]",
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n[]",
    None,
]
# The status class the client counts each of them in.
CLASS_OF_ANSWER = ["2xx", "503", "2xx", "other", "2xx", "unanswered"]


class ScriptedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.turns = itertools.count()
        host, port = self.server_address[:2]
        self.url = f"http://{host!s}:{port}/items"

    def answered(self) -> Counter[str]:
        """How many answers of each status class it has given so far."""
        taken = next(self.turns)
        return Counter(CLASS_OF_ANSWER[turn % len(ANSWERS)] for turn in range(taken))


class ScriptedHandler(socketserver.StreamRequestHandler):
    server: ScriptedServer

    def handle(self) -> None:
        while True:
            while (line := self.rfile.readline()) not in (b"\r\n", b""):
                pass
            if not line:
                return
            answer = ANSWERS[next(self.server.turns) % len(ANSWERS)]
            if answer is None:
                self.rfile.read()  # until the client gives up and closes
                return
            self.wfile.write(answer)
            if b"connection: close" in answer:
                return


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def scripted_url(scripted_server: ScriptedServer) -> str:
    return scripted_server.url


def test_every_request_is_counted_once_by_status_class(scripted_url: str) -> None:
    result = run_open_loop(scripted_url, rate=60, seconds=0.5, timeout=2)

    counts = {name: result.statuses[name].count for name in STATUS_CLASSES}
    assert counts == {"2xx": 15, "503": 5, "other": 5, "unanswered": 5}
    assert result.offered == 30
    assert result.goodput == 30
    assert result.statuses["unanswered"].p50_ms >= 1900  # from the schedule (timers round to ms)
    assert 0 < result.statuses["2xx"].p50_ms <= result.statuses["2xx"].p99_ms


def test_warm_up_requests_are_sent_but_not_counted(scripted_server: ScriptedServer) -> None:
    result = run_open_loop(scripted_server.url, rate=60, seconds=0.25, warmup=2 / 60, timeout=2)

    answered = scripted_server.answered()
    assert answered.total() == 2 + 15  # the server saw the warm-up's two requests
    assert result.offered == 15
    counts = {name: result.statuses[name].count for name in STATUS_CLASSES}
    assert sum(counts.values()) == 15
    # Which two answers the warm-up took depends on which connection the server reads first (a
    # slow machine can serve the second request before the first); the counts leave out just two.
    left_out = {name: answered[name] - counts[name] for name in STATUS_CLASSES}
    assert all(number >= 0 for number in left_out.values()), left_out
    assert sum(left_out.values()) == 2


def test_reports_the_real_service(migrated_database: str) -> None:
    # Room enough that a busy machine's pauses are not refusals: this test is about the counting.
    patient = {"DB_POOL_TIMEOUT": "10", "REQUESTS_PER_CONNECTION": "1000"}
    with running_server(DATABASE_URL=migrated_database, **patient) as server:
        result = run_open_loop(f"{server.url}/items?limit=20", rate=100, seconds=1, warmup=0.2)

    assert result.statuses["2xx"].count == 100, result.statuses
    assert result.goodput == 100
    assert result.unanswered == 0
    assert 0 < result.statuses["2xx"].p50_ms <= result.statuses["2xx"].p99_ms
    table = open_loop_table([OpenLoopPoint(1, 200, result)]).splitlines()
    assert table[0].split()[:4] == ["offered/s", "goodput/s", "of", "cap"]
    assert table[1].split()[:4] == ["100", "100", "50%", "100"]
    assert table[2] == "capacity (closed loop, requests/s), in the rounds shown: 200"


def served(count: int, p99_ms: float) -> OpenLoopResult:
    figures = {name: StatusFigures(0, 0, 0) for name in STATUS_CLASSES}
    figures["2xx"] = StatusFigures(count, p99_ms / 2, p99_ms)
    return OpenLoopResult(rate=3000, seconds=10, statuses=figures, connections=1, late_p99_ms=1)


def test_the_median_round_is_by_share_of_its_own_capacity_and_kept_whole() -> None:
    # Goodput 900/s of 1000 (90%), 800/s of 1000 (80%), 850/s of 900 (94%): 90% is the median.
    rounds = [
        OpenLoopPoint(1, 1000, served(9000, 40)),
        OpenLoopPoint(2, 1000, served(8000, 900)),
        OpenLoopPoint(3, 900, served(8500, 30)),
    ]

    median = median_point(rounds)

    assert median.round == 1
    assert median.result.statuses["2xx"].p99_ms == 40
    assert median_point(rounds[:2]).round == 2  # of two, the lower
    assert median_point([OpenLoopPoint(1, None, served(10, 1))]).share is None


def test_rates_are_requests_per_second_or_multiples_of_the_capacity() -> None:
    parsed = rates("500,1.5x,3X")

    assert parsed == [Rate(500, relative=False), Rate(1.5, relative=True), Rate(3, relative=True)]
    assert [rate.per_second(1000) for rate in parsed] == [500, 1500, 3000]
