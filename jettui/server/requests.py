"""The table of asynchronous requests (the seed's ``...Async`` methods).

An ``...Async`` call registers a request and answers at once with its Request Structure;
the work runs as its own task and its result (or error) stays in the table for
``getRequestStatus`` / ``getRequestResult`` until garbage collection expires it.  Requests
belong to the principal that made them: another user cannot read them.

Progressive results (jettui extension): a request started with a :class:`Pages` buffer
publishes its result's items while it runs (``lsAsync`` with ``pageSize``), and
``getRequestPage`` reads them from an offset without waiting for the end.  The final
result still arrives whole through ``getRequestResult``, so the seed calls are unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jettui.constants import REQUEST_STATUS_ERROR, REQUEST_STATUS_PENDING, REQUEST_STATUS_SUCCESS
from jettui.errors import CommandError, JettuiError

#: Default time a finished request's result is kept, in seconds.
DEFAULT_RESULT_TTL = 3600.0


class Pages:
    """The items a progressive request has published so far, in their final order.

    Only touched on the event loop: a worker thread publishes through
    ``loop.call_soon_threadsafe(pages.publish, items)``.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.expected: int | None = None
        """How many items the request expects to publish in all (an upper bound), once known."""
        self.finished = False
        """Nothing more will be published: the last page is in, or the request ended."""
        self._changed = asyncio.Event()

    def publish(self, items: list[Any], expected: int | None = None, last: bool = False) -> None:
        """Add ``items``; ``last``: nothing more will come (the request is about to end)."""
        self.items.extend(items)
        if expected is not None:
            self.expected = expected
        if last:
            self.finished = True
        self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_beyond(self, offset: int) -> None:
        """Return once more than ``offset`` items are published or nothing more will be."""
        while len(self.items) <= offset and not self.finished:
            await self._changed.wait()


@dataclass
class PagedWork:
    """What a handler returns to run a progressive request: the work and its page buffer."""

    run: Callable[[], Awaitable[Any]]
    pages: Pages


@dataclass
class AsyncRequest:
    request_id: int
    method: str
    owners: frozenset[str]
    created: float
    status: str = REQUEST_STATUS_PENDING
    result: Any = None
    error_message: str = ""
    error_code: str = "command"
    finished: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pages: Pages | None = None
    """Set for a progressive request (see :class:`Pages`)."""

    def structure(self) -> dict[str, Any]:
        """The Request Structure."""
        return {
            "requestId": self.request_id,
            "status": self.status,
            "processing": self.status == REQUEST_STATUS_PENDING,
            "errorMessage": self.error_message,
            **self.extra,
        }


class RequestTable:
    def __init__(self, clock: Callable[[], float], ttl: float = DEFAULT_RESULT_TTL) -> None:
        self._clock = clock
        self.ttl = ttl
        self._ids = itertools.count(1)
        self._requests: dict[int, AsyncRequest] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._requests)

    def start(
        self,
        method: str,
        owners: frozenset[str],
        work: Callable[[], Awaitable[Any]] | PagedWork,
        extra: dict[str, Any] | None = None,
    ) -> AsyncRequest:
        pages = None
        if isinstance(work, PagedWork):
            work, pages = work.run, work.pages
        req = AsyncRequest(next(self._ids), method, owners, self._clock(), extra=dict(extra or {}), pages=pages)
        self._requests[req.request_id] = req
        task = asyncio.get_running_loop().create_task(self._run(req, work), name=f"request-{req.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return req

    async def _run(self, req: AsyncRequest, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            req.result = await work()
            req.status = REQUEST_STATUS_SUCCESS
        except JettuiError as exc:
            req.status, req.error_message, req.error_code = REQUEST_STATUS_ERROR, exc.message, exc.code
        except asyncio.CancelledError:
            req.status, req.error_message = REQUEST_STATUS_ERROR, "request cancelled: the server is stopping"
            raise
        except Exception as exc:  # a bug in a handler must not kill the server
            req.status, req.error_message = (
                REQUEST_STATUS_ERROR,
                f"internal error: {exc.__class__.__name__}: {exc}",
            )
        finally:
            req.finished = self._clock()
            req.done.set()
            if req.pages is not None:
                req.pages.finish()

    def get(self, request_id: int, owners: frozenset[str] | None) -> AsyncRequest:
        """``owners=None`` sees every request (superusers)."""
        req = self._requests.get(request_id)
        if req is None or (owners is not None and not owners & req.owners):
            raise CommandError(f"request {request_id} not found: it expired or was never issued")
        return req

    async def wait(self, request_id: int, owners: frozenset[str] | None) -> AsyncRequest:
        req = self.get(request_id, owners)
        await req.done.wait()
        return req

    def expire(self, force: bool = False, time_limit: float | None = None) -> int:
        """Drop finished requests older than the TTL (or all finished ones when forced)."""
        now = self._clock()
        limit = 0.0 if force else (self.ttl if time_limit is None else time_limit)
        old = [rid for rid, req in self._requests.items() if req.finished is not None and now - req.finished >= limit]
        for rid in old:
            del self._requests[rid]
        return len(old)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
