"""Request dependencies: four views of the request's one unit of work (see unit_of_work.py).

| dependency       | gives                  | for                                          |
|------------------|------------------------|----------------------------------------------|
| `Connection`     | `AsyncConnection`      | Core statements that write (and read)        |
| `ReadConnection` | `ReadOnlyConnection`   | Core reads: the cheapest path, retried once  |
| `Session`        | `AsyncSession`         | the ORM, writing (and reading)               |
| `ReadSession`    | `ReadOnlySession`      | ORM reads                                    |

Any mix in one handler shares one place in the queue and, once the request writes, one
connection and one transaction. The transaction commits when the response is a success (a status
below 400) and rolls back on any error or other status; the connection is back in the pool before
the response is sent, on every path (success, error, cancellation, a client gone).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .database import Database
from .replicas import Replicas
from .unit_of_work import ReadOnlyConnection, ReadOnlySession, UnitOfWork

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Where the middleware and the dependencies meet in the request's ASGI scope.
UNIT_OF_WORK = "database.unit_of_work"


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_replicas(request: Request) -> Replicas | None:
    """The read replicas, or None without DATABASE_REPLICA_URLS."""
    replicas: Replicas | None = getattr(request.app.state, "replicas", None)
    return replicas


def route_of(request: Request) -> str:
    """`GET /items/{item_id}` rather than the concrete path, so logs group by route."""
    route = request.scope.get("route")
    return f"{request.method} {route.path if route is not None else request.url.path}"


def unit_of_work(request: Request) -> UnitOfWork:
    """The request's unit of work, made by the first database dependency that asks for it and
    ended by `CommitBeforeResponse` as the response starts (or when the request fails)."""
    scope = request.scope
    work: UnitOfWork | None = scope.get(UNIT_OF_WORK)
    if work is None:
        if UNIT_OF_WORK not in scope:
            raise RuntimeError(
                "database dependencies need CommitBeforeResponse: build the application with "
                "create_app(), or add install_unit_of_work(app)"
            )
        work = UnitOfWork(get_database(request), route_of(request), replicas=get_replicas(request))
        scope[UNIT_OF_WORK] = work
    return work


async def read_connection(request: Request) -> ReadOnlyConnection:
    work = unit_of_work(request)
    await work.enter(reading=True)  # a full pool answers 503 before the handler starts
    return work.read_connection()


async def read_session(request: Request) -> ReadOnlySession:
    work = unit_of_work(request)
    await work.enter(reading=True)
    return work.read_session()


def writing_view(
    view: Callable[[UnitOfWork], Awaitable[T]],
) -> Callable[[Request], AsyncIterator[T]]:
    """A dependency lending `view` of the request's unit of work, for a handler that writes.

    After the handler it flushes the ORM session, so that a failing write fails the request
    through the error handlers; when the handler fails, it rolls the transaction back at once. The
    read-only views need no such step: `CommitBeforeResponse` gives their place back.
    """

    async def dependency(request: Request) -> AsyncIterator[T]:
        work = unit_of_work(request)
        try:
            yield await view(work)
            await work.flush()
        except BaseException as error:
            await work.finish(commit=False, error=error)
            raise

    return dependency


connection = writing_view(UnitOfWork.connection)
session = writing_view(UnitOfWork.session)

Connection = Annotated[AsyncConnection, Depends(connection, scope="function")]
ReadConnection = Annotated[ReadOnlyConnection, Depends(read_connection, scope="function")]
Session = Annotated[AsyncSession, Depends(session, scope="function")]
ReadSession = Annotated[ReadOnlySession, Depends(read_session, scope="function")]


class CommitBeforeResponse:
    """Ends a request's unit of work as its response starts, before it is sent: commits when the
    response is a success, rolls back otherwise, and gives the place in the queue back.

    A dependency's clean-up cannot see the response: a handler may *return* a 4xx. This sees the
    status as the response starts. A commit that fails becomes the error's own response (409,
    503, ...) instead of the success. A request that fails before any response ends its unit here
    too, on the way out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[UNIT_OF_WORK] = None
        failed = False

        async def send_after_commit(message: Message) -> None:
            nonlocal failed
            if failed:
                return  # the rest of the response that a failed commit replaced
            if message["type"] == "http.response.start":
                work: UnitOfWork | None = scope[UNIT_OF_WORK]
                if work is not None:
                    try:
                        await work.finish(commit=200 <= message["status"] < 400)  # noqa: PLR2004
                    except Exception as error:  # noqa: BLE001 (answered by its handler)
                        failed = True
                        response = await error_response(scope, receive, error)
                        await response(scope, receive, send)
                        return
            await send(message)

        try:
            await self.app(scope, receive, send_after_commit)
        finally:
            work: UnitOfWork | None = scope[UNIT_OF_WORK]
            if work is not None and not work.finished:  # usually ended as the response started
                with anyio.CancelScope(shield=True):
                    await work.finish(commit=False)


async def error_response(scope: Scope, receive: Receive, error: Exception) -> Response:
    """The response the application's own exception handlers give `error`, or a plain 500."""
    handlers = scope["app"].exception_handlers
    for kind in type(error).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            response: Response = await handler(Request(scope, receive), error)
            return response
    logger.error("commit failed", exc_info=error)
    return PlainTextResponse("Internal Server Error", status_code=500)


def install_unit_of_work(app: FastAPI) -> None:
    app.add_middleware(CommitBeforeResponse)
