"""A stoppable daemon thread that calls one step over and over (the key-epoch watcher's
polls, the lazy rewrapper's batches)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Calls ``step`` on a daemon thread until :meth:`close`, ``interval`` seconds apart
    (0: at once again). An exception of a step goes to ``failed`` (called inside the
    ``except``, so it may log the traceback) and the loop goes on: a dead thread would stop
    its work silently."""

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        failed: Callable[[Exception], object],
        *,
        interval: float = 0.0,
    ) -> None:
        self.name = name
        self.step = step
        self.failed = failed
        self.interval = interval
        self.stopped = threading.Event()
        """Set by :meth:`close`; a step may wait on it to be cut short."""
        self.thread: threading.Thread | None = None
        """The thread, once started."""

    def start(self) -> None:
        """Start the thread (the first step at once); idempotent."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the thread's top; `failed` logs it
                self.failed(exc)
            if self.stopped.wait(self.interval):
                return

    def close(self, timeout: float) -> None:
        """Stop, and wait up to ``timeout`` seconds for a step in flight to end (not when
        called from the thread itself)."""
        self.stopped.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)
