"""The write gate: how many note writes may wait on the database at once.

A write can wait on the database for its whole busy timeout (another process holding
SQLite's write lock, a PostgreSQL row lock). Writes run on the server's worker threads,
which reads need too: 60 writers queued on a locked database once filled the pool and
stalled every read for 8.5 s. So at most ``NOTELETT_MAX_CONCURRENT_WRITES`` writes hold a
slot at once, well below the pool's size; a write that gets no slot within
``NOTELETT_WRITE_WAIT_SECONDS`` is answered 503 with ``Retry-After``. The wait happens on
the event loop, not on a worker thread, so a queue of writers never holds a thread a read
could use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from notelett.errors import WritesBusyError


class WriteGate:
    """At most ``slots`` writes at once; the others wait up to ``wait_seconds``, then 503."""

    def __init__(self, *, slots: int, wait_seconds: float) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.refused = 0
        """Writes refused for want of a slot (for tests and logs)."""
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def __repr__(self) -> str:
        return f"WriteGate(slots={self.slots}, wait_seconds={self.wait_seconds})"

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block; :class:`WritesBusyError` if none frees in time."""
        semaphore = self._semaphore()
        try:
            await asyncio.wait_for(semaphore.acquire(), self.wait_seconds)
        except TimeoutError:
            self.refused += 1
            raise WritesBusyError() from None
        try:
            yield
        finally:
            semaphore.release()

    def _semaphore(self) -> asyncio.Semaphore:
        """The running loop's semaphore (an app served by one loop has exactly one)."""
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.slots)
        return semaphore
